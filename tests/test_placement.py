"""The plan (the source of sharding.tsv and the W&B table) equals what JAX actually does with
every variable of the tiny model, weights, LoRA and optimizer slots alike; and the layout files
cover the model they are used with."""

import pytest

from conftest import CONF, compose

LAYOUT_FILES = sorted(p.stem for p in (CONF / "layout").glob("*.yaml"))


def _built(cfg):
    import keras

    from runner import layout, model, optim
    from runner.plan.assemble import make_plan

    keras.backend.clear_session()
    devices = keras.distribution.list_devices()
    the_plan, _ = make_plan(cfg, len(devices))
    with layout.distribution(cfg.mesh, the_plan.placement_rules(), devices).scope():
        causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
        optimizer = optim.build_optimizer(cfg.optimizer)
        optimizer.build(causal_lm.trainable_variables)
    return the_plan, causal_lm.backbone.variables + optimizer.variables


@pytest.mark.parametrize("overrides", [
    [], ["layout=gemma_model_parallel", "mesh=1x8"], ["mesh=8x1", "mesh.fsdp=true"],
    ["lora=none", "optimizer=sgd"],
    ["quant=int8", "lora=rank16"], ["train.precision=bfloat16"], ["layout=derived"],
    ["layout=derived", "mesh=1x8"],
], ids=["auto-2x4", "rules-1x8", "fsdp-8x1", "full-sgd", "int8-lora16", "bfloat16", "derived-2x4",
        "derived-1x8"])
def test_plan_equals_placement(overrides):
    from runner.plan.placement import actual_specs

    the_plan, variables = _built(compose(*overrides))
    assert the_plan.problems == []
    planned = {e.path: e.spec for e in the_plan.entries}
    actual = actual_specs(variables)
    assert set(planned) == set(actual)
    assert planned == actual
    split = [p for p, s in actual.items() if any(a is not None for a in s)]
    assert split, "something must be sharded"


@pytest.mark.parametrize("layout", ["auto", "derived"])
def test_data_parallel_means_every_weight_whole_on_every_device(layout):
    """mesh=data_parallel (and 8x1) set mesh.fsdp=false: the family's layout would otherwise split
    weights along the batch axis, which is fully sharded data parallel."""
    from runner.plan.placement import actual_specs

    the_plan, variables = _built(compose("mesh=data_parallel", f"layout={layout}"))
    assert the_plan.problems == [] and the_plan.axis_sizes == {"batch": 8, "model": 1}
    # an axis of size 1 splits nothing: only the batch axis (8) could
    assert all("batch" not in s for s in actual_specs(variables).values())
    assert all("batch" not in e.spec for e in the_plan.entries)


def test_gemma_specs_on_the_tiny_model():
    the_plan, _ = _built(compose("layout=gemma_model_parallel", "mesh=1x8"))
    spec = {e.path: e.spec for e in the_plan.entries}
    assert spec["token_embedding/embeddings"] == ("model", None)
    assert spec["decoder_block_3/attention/key/kernel"] == ("model", None, None)
    assert spec["decoder_block_3/attention/attention_output/kernel"] == ("model", None, None)
    assert spec["decoder_block_0/ffw_gating/kernel"] == (None, "model")
    assert spec["decoder_block_0/ffw_linear/kernel"] == ("model", None)
    assert spec["decoder_block_0/attention/query/lora_kernel_a"] == (None, None, None)
    assert spec["decoder_block_0/pre_ffw_norm/scale"] == (None,)


# Each layout file, with the models it is written for (planned from their model files, no weights).
LAYOUT_MODELS = {
    # every shipped model file on the default mesh (2 x 4) with its default layout
    "auto": [p.stem for p in sorted((CONF / "model").glob("*.yaml"))],
    "gemma_model_parallel": ["tiny_gemma", "gemma_7b_en"],
    "gemma_kv_replicated": ["tiny_gemma", "gemma_2b_en"],
    "gemma3": ["gemma3_4b_text", "gemma3_12b_text", "gemma3_27b_text"],
    "gemma3_kv_replicated": ["gemma3_270m", "gemma3_1b"],
    "mistral": ["mistral_7b_en"],
    "qwen3": ["qwen3_8b_en"],  # the smaller sizes tie embeddings: no reverse_embedding to split
    "derived": [p.stem for p in sorted((CONF / "model").glob("*.yaml"))],  # any model at all
}


def test_every_layout_file_is_covered():
    assert sorted(LAYOUT_MODELS) == LAYOUT_FILES


@pytest.mark.parametrize("name,model", [(n, m) for n, ms in LAYOUT_MODELS.items() for m in ms])
def test_every_layout_rule_matches_the_models_it_is_used_with(name, model):
    from runner.plan.assemble import make_plan

    cfg = compose(f"layout={name}", f"model={model}", "mesh=2x4")
    the_plan, rules = make_plan(cfg, 8)
    used = {e.rule for e in the_plan.entries}
    if name != "auto":  # the family's own layout may hold rules a size lacks (a tied head)
        assert rules and all(r.name in used for r in rules), [r.name for r in rules
                                                              if r.name not in used]
    assert the_plan.problems == []
    split = {e.path for e in the_plan.entries if e.kind == "weight" and any(e.spec)}
    assert "token_embedding/embeddings" in split or model.startswith("llama3")


def test_precision_sets_weight_dtypes_and_bytes():
    half, _ = _built(compose("train.precision=bfloat16"))
    mixed, _ = _built(compose("train.precision=mixed_bfloat16"))
    emb = "token_embedding/embeddings"
    by_half = {e.path: e for e in half.entries}
    by_mixed = {e.path: e for e in mixed.entries}
    assert by_half[emb].dtype == "bfloat16" and by_mixed[emb].dtype == "float32"
    assert by_half[emb].bytes_per_device * 2 == by_mixed[emb].bytes_per_device


def test_the_plan_names_large_variables_left_whole_and_derived_splits_them():
    """llama3_8b_en's keras-hub map leaves its 2 GB untied LM head whole on every device: a
    warning (not "No problems found"); layout=derived splits it."""
    from runner.plan.assemble import make_plan

    auto, _ = make_plan(compose("model=llama3_8b_en", "mesh=1x8"), 8)
    assert auto.problems == []
    assert len(auto.warnings) == 1 and auto.warnings[0].startswith(
        "token_embedding/reverse_embeddings is whole on every device (2,004 MB each)")
    derived, _ = make_plan(compose("model=llama3_8b_en", "mesh=1x8", "layout=derived"), 8)
    assert derived.problems == [] and derived.warnings == []
    spec = {e.path: e.spec for e in derived.entries}
    assert spec["token_embedding/reverse_embeddings"] == (None, "model")


def test_layout_auto_leaves_a_kv_head_whole_and_says_so_where_rules_refuse_naming_no_family():
    from runner.plan.assemble import make_plan

    auto, _ = make_plan(compose("model=gemma3_270m", "mesh=2x4"), 8)
    assert auto.problems == []
    spec = {e.path: e.spec for e in auto.entries}
    assert spec["decoder_block_0/attention/key/kernel"] == (None, "batch", None)
    assert any("attention/key/kernel (18 variables) dimension 0 (size 1) does not divide mesh "
               "axis 'model' (4): left whole" in n for n in auto.notes)
    rules, _ = make_plan(compose("model=qwen2.5_0.5b_en", "mesh=2x4", "layout=qwen3"), 8)
    problem = next(p for p in rules.problems if "does not divide" in p)
    assert "layout=auto" in problem and "layout=derived" in problem and "gemma" not in problem

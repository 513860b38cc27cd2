"""`python -m runner.plan`: the plan of any model on any mesh, with no weights and no accelerator,
its memory totals, its problems (exit 2), and parameter counts as the published guides print them."""

import json
import re

import pytest

from conftest import compose, run_cli

# gemma2_27b_en's parameter count (keras-hub preset metadata).
GEMMA2_27B_PARAMS = 27_227_128_320


def _plan(*overrides):
    from runner.plan.__main__ import plan_for

    return plan_for(compose(*overrides))


@pytest.mark.slow
def test_plans_a_27b_model_on_a_4x16_mesh_this_machine_does_not_have(workdir):
    out = workdir / "plan.json"
    result = run_cli("model=gemma2_27b_en", "mesh.shape=[4,16]", "plan.accelerator=tpu-v5p",
                     "train.batch_size=64", "--json", str(out), cwd=workdir,
                     module="runner.plan", timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    plan = json.loads(out.read_text())
    assert plan["axis_sizes"] == {"batch": 4, "model": 16}
    assert plan["total_params"] == GEMMA2_27B_PARAMS + plan["trainable_params"]
    by_path = {e["path"]: e for e in plan["entries"]}
    # keras-hub's Gemma layout map splits the embedding (vocab, hidden) over model and batch.
    emb = by_path["token_embedding/embeddings"]
    assert emb["spec"] == ["model", "batch"]
    assert emb["bytes_per_device"] == 256000 * 4608 * 4 // 64
    assert plan["fits"] is True and plan["problems"] == []
    assert plan["memory_per_device"]["total"] < 95 * 2**30
    # The printed table: one row per layer pattern, with the layer count, not 46 rows.
    assert re.search(r"decoder_block_\*/attention/query/kernel\s+46\s+32x4608x128", result.stdout)
    assert "decoder_block_7/" not in result.stdout
    # No weights were built: 27B float32 weights would be 100 GB; the CLI reports its own peak.
    peak = float(re.search(r"with ([\d.]+) GB peak host memory", result.stdout).group(1))
    assert peak < 4, result.stdout[-500:]


@pytest.mark.slow
def test_every_problem_is_listed_with_its_fix_and_exits_2(workdir):
    result = run_cli(
        "model=gemma_2b_en", "mesh=2x4", "layout=gemma_model_parallel", "train.batch_size=3",
        "+layout.rules.typo={pattern:'decoder_block.*attn.*',axes:[model]}",
        "+layout.rules.overlap={pattern:'decoder_block.*query.kernel',axes:[model,null,null]}",
        "layout.rules.embedding.axes=[model]",
        cwd=workdir, module="runner.plan", timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    problems = result.stdout.split("Problems (", 1)[1]
    # gemma_2b_en's single kv head on a model axis of 4: one line for all 18 layers, with the fix.
    assert ("decoder_block_*/attention/key/kernel (18 variables) dimension 0 (size 1) does not "
            "divide by mesh axis 'model' (size 4), set by layout.rules.attention_qkv; use a mesh "
            "whose 'model' axis divides 1, or null for dimension 0 in "
            "layout.rules.attention_qkv.axes") in problems
    assert "layout.rules.typo (pattern 'decoder_block.*attn.*') matches no variable" in problems
    assert ("decoder_block_*/attention/query/kernel (18 variables) is matched by 2 rules "
            "(layout.rules.attention_qkv, layout.rules.overlap)") in problems
    assert ("layout.rules.embedding gives 1 axes (model) to token_embedding/embeddings, which has "
            "2 dimensions") in problems
    assert "train.batch_size=3 does not divide by the mesh's batch axis 'batch' (size 2)" in problems


@pytest.mark.slow
def test_summary_all_and_json_agree_with_the_training_runs_plan(workdir):
    from runner.plan.assemble import make_plan

    out = workdir / "plan.json"
    summary = run_cli("--json", str(out), cwd=workdir, module="runner.plan", timeout=180)
    full = run_cli("--all", cwd=workdir, module="runner.plan", timeout=180)
    assert summary.returncode == 0 and full.returncode == 0, summary.stderr[-2000:]
    assert re.search(r"decoder_block_\*/ffw_linear/kernel\s+4\s+", summary.stdout)
    assert "decoder_block_3/ffw_linear/kernel" in full.stdout
    assert "decoder_block_*" not in full.stdout
    assert "this machine" in summary.stdout and "No problems found." in summary.stdout

    cfg = compose()
    the_plan, _ = make_plan(cfg, 8)
    planned = json.loads(out.read_text())
    assert [(e["path"], tuple(e["spec"]), e["bytes_per_device"]) for e in planned["entries"]] == \
        [(e.path, e.spec, e.bytes_per_device) for e in the_plan.entries]
    mem = planned["memory_per_device"]
    trainable = sum(e.bytes_per_device for e in the_plan.entries if e.trainable)
    assert mem["trainable_weights"] == mem["gradients"] == trainable
    # adamw: a momentum and a velocity per trainable weight, plus its iteration and learning rate
    assert mem["optimizer_state"] == 2 * trainable + 8
    assert mem["total"] == sum(v for k, v in mem.items() if k != "total")


@pytest.mark.parametrize("model,total,trainable", [
    # keras-hub "Fine-tune Gemma with LoRA and QLoRA" guide (gemma_2b_en, enable_lora(rank=4))
    ("gemma_2b_en", 2_507_536_384, 1_363_968),
    # Gemma 7B with Keras LoRA rank 4: 11,067,392 trainable, as reported by users of the
    # distributed-tuning guide; total = keras-hub's 8,537,680,896 plus those.
    ("gemma_7b_en", 8_548_748_288, 11_067_392),
    # ai.google.dev "Fine-tune Gemma models in Keras using LoRA" (Gemma 2 2B, rank 4)
    ("gemma2_2b_en", 2_617_270_528, 2_928_640),
])
def test_parameter_counts_match_the_published_lora_rank_4_guides(model, total, trainable):
    from runner.plan.assemble import make_plan

    the_plan, _ = make_plan(compose(f"model={model}", "lora=rank4", "mesh=8x1"), 8)
    assert (the_plan.total_params, the_plan.trainable_params) == (total, trainable)


@pytest.mark.parametrize("preset,total", [("gemma_2b_en", 2_506_172_416),
                                          ("qwen3_0.6b_en", 596_049_920)])
def test_model_preset_alone_plans_that_preset_not_the_default_model_file(preset, total):
    """The default model file (the tiny model) never lends its numbers to another preset: offline,
    the architecture comes from the model file whose preset it is."""
    from runner.plan.assemble import make_plan

    the_plan, _ = make_plan(compose(f"model.preset={preset}", "lora=none", "mesh=8x1"), 8)
    assert the_plan.total_params == total


@pytest.mark.slow
def test_a_preset_nothing_describes_offline_is_refused_with_the_way_to_plan_it(workdir):
    result = run_cli("model.preset=gemma_13b_imaginary", module="runner.plan", cwd=workdir)
    assert result.returncode == 2
    assert "model=<file in conf/model/>" in result.stderr.strip().splitlines()[-1]


def test_fit_verdict_and_device_memory_figures():
    from runner.errors import UserError
    from runner.plan.memory import GB

    fits = _plan("plan.accelerator=h100-80gb")
    assert fits["fits"] is True and fits["device"].bytes == 80 * GB
    tiny = _plan("plan.device_memory_gb=0.001")
    assert tiny["fits"] is False
    assert "does not fit" in tiny["plan"].problems[-1]
    assert "plan.device_memory_gb=0.001" in tiny["plan"].problems[-1]
    unknown = _plan("mesh=2x8")  # 16 devices; this machine has 8: nothing to compare with
    assert unknown["fits"] is None and unknown["plan"].problems == []
    assert "plan.accelerator" in unknown["device"].source
    with pytest.raises(UserError, match="plan.accelerator=h100 is not known"):
        _plan("plan.accelerator=h100")


def test_memory_scales_with_batch_and_splits_over_the_mesh():
    base = _plan("train.batch_size=8")["memory"]
    double = _plan("train.batch_size=16")["memory"]
    assert double.activations == pytest.approx(2 * base.activations, rel=1e-6)
    assert double.frozen_weights == base.frozen_weights
    # Rules that split on the model axis only: 8 ways on 1 x 8, 4 ways on 2 x 4.
    narrow = _plan("layout=gemma_model_parallel", "mesh=2x4")["memory"]
    wide = _plan("layout=gemma_model_parallel", "mesh=1x8")["memory"]
    assert wide.frozen_weights < narrow.frozen_weights


@pytest.mark.parametrize("path,pattern", [
    ("decoder_block_12/attention/query/kernel", "decoder_block_*/attention/query/kernel"),
    ("decoder_block_3/ffw_gating_2/kernel", "decoder_block_*/ffw_gating_2/kernel"),
    ("adamw/decoder_block_0_ffw_gating_2_kernel_momentum",
     "adamw/decoder_block_*_ffw_gating_2_kernel_momentum"),
    ("transformer_layer_31/self_attention/key/kernel",
     "transformer_layer_*/self_attention/key/kernel"),
    ("token_embedding/embeddings", "token_embedding/embeddings"),
    ("adamw/iteration", "adamw/iteration"),
])
def test_layer_patterns_collapse_the_layer_index_only(path, pattern):
    from runner.plan import layer_pattern

    assert layer_pattern(path) == pattern


def test_the_plan_reports_the_check_stages_problems_too():
    """runner.plan runs the same check stage as a run: a dataset split that does not exist and
    a merged preset from a quantized base are listed beside the sharding problems."""
    result = _plan("dataset.split=nope", "quant=int8", "mesh=data_parallel",
                   "train.save_merged_preset=true")
    problems = result["plan"].problems
    assert any("dataset.split='nope' is not a split of tiny_reviews" in p for p in problems)
    assert any("train.save_merged_preset needs LoRA on a base that is not quantized" in p
               for p in problems)


def test_a_dataset_not_prepared_here_is_a_note_not_a_problem():
    result = _plan("dataset=imdb_reviews")  # planning a pod run from a laptop without the data
    assert result["plan"].problems == []
    assert any("imdb_reviews is not prepared here" in n for n in result["notes"])

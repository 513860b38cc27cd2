"""The family harness: every family in the registry (runner/families/) has every facet, and a
tiny transformers checkpoint of each of its model types builds, plans, is placed as planned and
trains a step under the rule-free layout (layout=derived) in this process. The same tiny
checkpoints go through `python -m runner` and `runner.export` into transformers and peft in
tests/test_hf_models.py, which loops over the same registry (hf_checkpoints.KINDS)."""

import importlib

import numpy as np
import pytest

import hf_checkpoints
from conftest import CONF, compose
from runner import chat
from runner.families import FAMILIES

FAMILY_NAMES = sorted(FAMILIES)
MODEL_TYPES = sorted(hf_checkpoints.KINDS)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_family_has_every_facet(name):
    import keras_hub

    family = FAMILIES[name]
    assert family.name == name
    for suffix in ("Backbone", "CausalLM", "Tokenizer", "CausalLMPreprocessor"):
        assert hasattr(keras_hub.models, family.prefix + suffix), family.prefix + suffix
    converter = importlib.import_module(
        f"keras_hub.src.utils.transformers.{family.converter}")
    for function in ("convert_backbone_config", "convert_weights", "convert_tokenizer"):
        assert callable(getattr(converter, function))
    assert family.hf_model_types
    assert set(family.tiny) == set(family.hf_model_types) == set(family.hf_layer_tensors)
    assert all(files for files in family.hf_tokenizer_files)
    assert family.chat_template in family.chat_templates
    assert set(family.chat_templates) <= set(chat.TEMPLATES)
    assert family.block_stem.endswith("_")
    assert all(callable(fix) for fix in family.corrections)
    backbone_cls = getattr(keras_hub.models, family.backbone)
    if family.auto_layout == "keras-hub":
        assert hasattr(backbone_cls, "get_layout_map")
    elif family.auto_layout != "derived":
        assert (CONF / "layout" / f"{family.auto_layout}.yaml").is_file()


def _tiny_backbone(model_type: str):
    """The keras-hub backbone of a tiny checkpoint of `model_type`, from its config alone."""
    import transformers

    from runner import model
    from runner.families import by_model_type
    from runner.hf.folder import keras_numbers

    config_cls, extra, _ = hf_checkpoints.KINDS[model_type]
    config = getattr(transformers, config_cls)(
        vocab_size=hf_checkpoints.VOCAB, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, **extra).to_dict()
    family = by_model_type(model_type)
    numbers = keras_numbers(family, config)
    with model.no_memory_scope():
        return family, model.backbone_class(family)(**numbers, dtype="float32"), config


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_model_type_converts_both_ways(model_type):
    """The family's to_hf describes its backbone as the same model type, keras-hub's converter
    reads it back into the same numbers, and its blocks carry the family's block stem."""
    from runner.export.hf_config import hf_config

    family, backbone, config = _tiny_backbone(model_type)
    assert FAMILIES[family].to_hf(backbone)[0] == model_type
    assert hf_config(family, backbone)["model_type"] == model_type
    stem = FAMILIES[family].block_stem
    assert any(v.path.startswith(f"{stem}0/") for v in backbone.variables)


@pytest.mark.slow
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_tiny_model_of_every_family_trains_a_step_under_the_derived_layout(
        model_type, tmp_path):
    import keras

    from runner import layout, model, objective, optim
    from runner.plan.assemble import make_plan
    from runner.plan.placement import verify_placement

    folder = hf_checkpoints.make(model_type, tmp_path / model_type)
    cfg = compose(f"model.preset={folder}", "layout=derived", "lora=rank4", "train.batch_size=4")
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    devices = keras.distribution.list_devices()
    the_plan, _ = make_plan(cfg, len(devices))
    assert the_plan.problems == []
    assert any(any(e.spec) for e in the_plan.entries if e.kind == "weight")
    with layout.distribution(cfg.mesh, the_plan.placement_rules(), devices).scope():
        lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
        lm.preprocessor = None  # batches of token ids, as the runner's data pipeline gives
        objective.compile_for_training(lm, optim.build_optimizer(cfg.optimizer, 2),
                                       cfg.generate, cfg.train, 1, cfg.seed)
        ids = np.random.default_rng(0).integers(3, hf_checkpoints.VOCAB, (4, 16), np.int32)
        batch = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
        before = np.asarray(lm.predict_on_batch(batch))
        history = lm.fit(batch, np.roll(ids, -1, axis=1), batch_size=4, epochs=1, verbose=0)
        after = np.asarray(lm.predict_on_batch(batch))
    verify_placement(the_plan, lm.backbone.variables + lm.optimizer.variables)
    assert np.isfinite(history.history["loss"][0])
    assert not np.allclose(before, after)  # the step changed the adapted model


@pytest.mark.parametrize("model_type,words", [("smollm3", "one path"), ("gpt2", "n_inner"),
                                              ("bert", "supported model types")])
def test_a_model_type_the_runner_does_not_train_is_one_line_with_the_reason(model_type, words):
    from runner.errors import UserError
    from runner.hf.folder import family_of

    with pytest.raises(UserError, match=words) as refused:
        family_of({"model_type": model_type}, "/models/x")
    assert "\n" not in str(refused.value) and "'mixtral'" in str(refused.value)

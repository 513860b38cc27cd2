"""Tiny keras-hub CausalLMs of every model type the registry knows (hf_checkpoints.KINDS), built
from a transformers config's numbers with seeded random weights: no files, for in-process checks
of the step (tests/test_step.py) and of packed rows (tests/test_packing.py)."""

import numpy as np

import hf_checkpoints
from conftest import compose


def tiny_causal_lm(model_type: str, lora: str = "none", **config_fields):
    """`lora`: a conf/lora name; LoRA's B is made non-zero so A gets a gradient too.
    config_fields: transformers config fields to change (e.g. sliding_window=4)."""
    import keras
    import transformers

    from runner import model
    from runner.families import by_model_type, correct
    from runner.hf.folder import keras_numbers

    config_cls, extra, _ = hf_checkpoints.KINDS[model_type]
    config = getattr(transformers, config_cls)(
        vocab_size=hf_checkpoints.VOCAB, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        **{**extra, **config_fields}).to_dict()
    family = by_model_type(model_type)
    keras.utils.set_random_seed(0)
    backbone = model.backbone_class(family)(**keras_numbers(family, config), dtype="float32")
    correct(backbone)
    model.apply_lora(backbone, compose(f"lora={lora}").lora)
    for v in backbone.trainable_variables:
        if "lora_kernel_b" in v.path:
            v.assign(np.random.default_rng(1).normal(0, 0.1, v.shape).astype("float32"))
    return model.causal_lm_class(family)(backbone=backbone, preprocessor=None)

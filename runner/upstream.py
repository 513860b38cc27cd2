"""Corrections for keras-hub 0.32 faults that change a model's numbers, applied to every
backbone the runner builds (from a preset, a Hugging Face folder, or for a plan), so the runner's
model computes what the checkpoint's publisher computes. Each names the fault; drop it when
keras-hub fixes it (tests/test_hf_import.py measures the logits against transformers')."""

from __future__ import annotations


def _qwen3_query_key_norm_epsilon(backbone) -> None:
    """Qwen3TransformerDecoder builds Qwen3Attention without its layer_norm_epsilon, so the
    per-head query/key norms use the attention's default 1e-5 instead of the model's (1e-6 for
    every Qwen 3 checkpoint): logits drift by ~1e-4 on a tiny model. The norms read `epsilon`
    at call time, so setting it after construction is exact."""
    for layer in backbone.transformer_layers:
        attention = layer._self_attention_layer
        for norm in (attention._query_dense_layer_norm, attention._key_dense_layer_norm):
            norm.epsilon = backbone.layer_norm_epsilon


_CORRECTIONS = {"Qwen3Backbone": (_qwen3_query_key_norm_epsilon,)}


def correct(backbone) -> None:
    for fix in _CORRECTIONS.get(type(backbone).__name__, ()):
        fix(backbone)

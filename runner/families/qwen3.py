"""Qwen 3 (dense): per-head query/key norms."""

from __future__ import annotations

from runner.families._hf import BPE, common_fields
from runner.families.family import Family, Tiny


def to_hf(b) -> tuple[str, dict]:
    window = b.sliding_window_size
    return "qwen3", {**common_fields(b), "head_dim": b.head_dim,
                     "rope_theta": b.rope_max_wavelength, "use_sliding_window": window is not None,
                     "sliding_window": window, "tie_word_embeddings": b.tie_word_embeddings}


def query_key_norm_epsilon(backbone) -> None:
    """keras-hub 0.32 fault: Qwen3TransformerDecoder builds Qwen3Attention without its
    layer_norm_epsilon, so the per-head query/key norms use the attention's default 1e-5 instead
    of the model's (1e-6 for every Qwen 3 checkpoint): logits drift by ~1e-4 on a tiny model. The
    norms read `epsilon` at call time, so setting it after construction is exact. Drop it when
    keras-hub fixes it (tests/test_hf_models.py measures the logits against transformers')."""
    for layer in backbone.transformer_layers:
        attention = layer._self_attention_layer
        for norm in (attention._query_dense_layer_norm, attention._key_dense_layer_norm):
            norm.epsilon = backbone.layer_norm_epsilon


FAMILY = Family(
    name="qwen3", backbone="Qwen3Backbone", hf_model_types=("qwen3",), converter="convert_qwen3",
    hf_tokenizer_files=BPE, block_stem="transformer_layer_", chat_template="qwen3",
    chat_templates=("qwen3", "chatml", "qwen2.5", "qwen2"), to_hf=to_hf,
    hf_layer_tensors={"qwen3": (("self_attn.q_norm.weight", "head"),
                                ("self_attn.k_norm.weight", "head"))},
    auto_layout="qwen3",  # keras-hub's Qwen3Backbone has no get_layout_map
    corrections=(query_key_norm_epsilon,),
    tiny={"qwen3": Tiny("Qwen3Config", {"head_dim": 16}, "qwen_bpe")})

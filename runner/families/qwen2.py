"""Qwen 2 and 2.5: biases on the query, key and value projections."""

from __future__ import annotations

from runner.families._hf import BPE, common_fields
from runner.families.family import Family, Tiny


def to_hf(b) -> tuple[str, dict]:
    return "qwen2", {**common_fields(b), "rope_theta": b.rope_max_wavelength,
                     "use_sliding_window": b.use_sliding_window_attention,
                     "sliding_window": b.sliding_window_size,
                     "tie_word_embeddings": b.tie_word_embeddings}


FAMILY = Family(
    name="qwen2", backbone="QwenBackbone", hf_model_types=("qwen2",), converter="convert_qwen",
    hf_tokenizer_files=BPE, block_stem="transformer_layer_", chat_template="qwen2.5",
    chat_templates=("qwen2.5", "qwen2", "chatml", "qwen3"), to_hf=to_hf,
    hf_layer_tensors={"qwen2": (("self_attn.q_proj.bias", "query"),
                                ("self_attn.k_proj.bias", "kv"), ("self_attn.v_proj.bias", "kv"))},
    auto_layout="keras-hub",
    tiny={"qwen2": Tiny("Qwen2Config", {"tie_word_embeddings": True}, "qwen_bpe")})

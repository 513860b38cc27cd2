"""Gemma 3 (text): per-head query/key norms, local and global layers with two rope bases."""

from __future__ import annotations

from runner.families._hf import BPE, SENTENCEPIECE, common_fields, query_scalar
from runner.families.family import Family, Tiny


def to_hf(b) -> tuple[str, dict]:
    fields = {**common_fields(b), "head_dim": b.head_dim, "query_pre_attn_scalar": query_scalar(b),
              "final_logit_softcapping": b.final_logit_soft_cap,
              "attn_logit_softcapping": b.attention_logit_soft_cap,
              "sliding_window": b.sliding_window_size, "tie_word_embeddings": True}
    if b.global_rope_scaling_factor != 1.0:
        fields["rope_scaling"] = {"rope_type": "linear", "factor": b.global_rope_scaling_factor}
    return "gemma3_text", fields


FAMILY = Family(
    name="gemma3", backbone="Gemma3Backbone", hf_model_types=("gemma3_text",),
    converter="convert_gemma3", hf_tokenizer_files=SENTENCEPIECE + BPE,
    block_stem="decoder_block_", chat_template="gemma3", chat_templates=("gemma3", "gemma"),
    to_hf=to_hf,
    hf_layer_tensors={"gemma3_text": (("self_attn.q_norm.weight", "head"),
                                      ("self_attn.k_norm.weight", "head"),
                                      ("pre_feedforward_layernorm.weight", "hidden"),
                                      ("post_feedforward_layernorm.weight", "hidden"))},
    auto_layout="gemma3",  # keras-hub's Gemma3Backbone has no get_layout_map
    tiny={"gemma3_text": Tiny("Gemma3TextConfig", {"head_dim": 16, "sliding_window": 32,
                                                   "query_pre_attn_scalar": 16}, "gemma_spm")})

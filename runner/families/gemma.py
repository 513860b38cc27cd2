"""Gemma 1 and Gemma 2: keras-hub's GemmaBackbone holds both (Gemma 2 adds post-norms, soft caps
and sliding windows)."""

from __future__ import annotations

from runner.families._hf import SENTENCEPIECE, common_fields, query_scalar
from runner.families.family import Family, Tiny


def to_hf(b) -> tuple[str, dict]:
    # keras-hub's GemmaDecoderBlock halves intermediate_dim for each of its two gating branches
    fields = {**common_fields(b), "intermediate_size": b.intermediate_dim // 2,
              "head_dim": b.head_dim, "tie_word_embeddings": True}
    if not b.use_post_ffw_norm:
        return "gemma", fields
    return "gemma2", {**fields, "query_pre_attn_scalar": query_scalar(b),
                      "final_logit_softcapping": b.final_logit_soft_cap,
                      "attn_logit_softcapping": b.attention_logit_soft_cap,
                      "sliding_window": b.sliding_window_size}


_NORMS = (("pre_feedforward_layernorm.weight", "hidden"),
          ("post_feedforward_layernorm.weight", "hidden"))

FAMILY = Family(
    name="gemma", backbone="GemmaBackbone", hf_model_types=("gemma", "gemma2"),
    converter="convert_gemma", hf_tokenizer_files=SENTENCEPIECE, block_stem="decoder_block_",
    chat_template="gemma", chat_templates=("gemma", "gemma3"), to_hf=to_hf,
    hf_layer_tensors={"gemma": (), "gemma2": _NORMS},
    ffw_share=2, auto_layout="keras-hub",
    tiny={"gemma": Tiny("GemmaConfig", {"head_dim": 16}, "gemma_spm"),
          "gemma2": Tiny("Gemma2Config", {"head_dim": 16, "sliding_window": 32,
                                          "query_pre_attn_scalar": 16}, "gemma_spm")})

"""transformers config fields every family shares, read off a keras-hub backbone (helpers for
the families' `to_hf`)."""

from __future__ import annotations


def common_fields(b) -> dict:
    return {"vocab_size": b.vocabulary_size, "num_hidden_layers": b.num_layers,
            "num_attention_heads": b.num_query_heads, "num_key_value_heads": b.num_key_value_heads,
            "hidden_size": b.hidden_dim, "intermediate_size": b.intermediate_dim,
            "rms_norm_eps": b.layer_norm_epsilon}


def query_scalar(b) -> int:
    """Gemma 2/3's query_pre_attn_scalar from keras-hub's query_head_dim_normalize."""
    return b.head_dim if b.query_head_dim_normalize else b.hidden_dim // b.num_query_heads


# Tokenizer file sets a Hugging Face folder may carry (any one set, all of its files).
SENTENCEPIECE = (("tokenizer.model",),)
BPE = (("tokenizer.json",),)

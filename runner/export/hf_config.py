"""A keras-hub backbone's numbers -> the transformers config.json that describes the same model.

Each family states the fields keras-hub's converter reads (runner.hf.folder.keras_numbers is
the inverse); every other field takes transformers' default for the model type, which is the
published models' own (Gemma 3's two rope bases, its sliding-window pattern). The result is
checked by converting it back: the same numbers, or the export stops.
"""

from __future__ import annotations

from runner.errors import UserError


def _common(b) -> dict:
    return {"vocab_size": b.vocabulary_size, "num_hidden_layers": b.num_layers,
            "num_attention_heads": b.num_query_heads, "num_key_value_heads": b.num_key_value_heads,
            "hidden_size": b.hidden_dim, "intermediate_size": b.intermediate_dim,
            "rms_norm_eps": b.layer_norm_epsilon}


def _query_scalar(b) -> int:
    return b.head_dim if b.query_head_dim_normalize else b.hidden_dim // b.num_query_heads


def _gemma(b) -> tuple[str, dict]:
    fields = {**_common(b), "intermediate_size": b.intermediate_dim // 2, "head_dim": b.head_dim,
              "tie_word_embeddings": True}
    if not b.use_post_ffw_norm:
        return "gemma", fields
    return "gemma2", {**fields, "query_pre_attn_scalar": _query_scalar(b),
                      "final_logit_softcapping": b.final_logit_soft_cap,
                      "attn_logit_softcapping": b.attention_logit_soft_cap,
                      "sliding_window": b.sliding_window_size}


def _gemma3(b) -> tuple[str, dict]:
    fields = {**_common(b), "head_dim": b.head_dim, "query_pre_attn_scalar": _query_scalar(b),
              "final_logit_softcapping": b.final_logit_soft_cap,
              "attn_logit_softcapping": b.attention_logit_soft_cap,
              "sliding_window": b.sliding_window_size, "tie_word_embeddings": True}
    if b.global_rope_scaling_factor != 1.0:
        fields["rope_scaling"] = {"rope_type": "linear", "factor": b.global_rope_scaling_factor}
    return "gemma3_text", fields


def _llama3(b) -> tuple[str, dict]:
    fields = {**_common(b), "rope_theta": b.rope_max_wavelength,
              "tie_word_embeddings": b.tie_word_embeddings}
    if b.rope_frequency_adjustment_factor is not None:
        fields["rope_scaling"] = {
            "rope_type": "llama3", "factor": b.rope_frequency_adjustment_factor,
            "low_freq_factor": b.rope_low_freq_factor, "high_freq_factor": b.rope_high_freq_factor,
            "original_max_position_embeddings": b.rope_pretraining_sequence_length}
    return "llama", fields


def _mistral(b) -> tuple[str, dict]:
    return "mistral", {**_common(b), "rope_theta": b.rope_max_wavelength, "head_dim": b.head_dim,
                       "sliding_window": b.sliding_window, "tie_word_embeddings": False}


def _qwen2(b) -> tuple[str, dict]:
    return "qwen2", {**_common(b), "rope_theta": b.rope_max_wavelength,
                     "use_sliding_window": b.use_sliding_window,
                     "sliding_window": b.sliding_window_size,
                     "tie_word_embeddings": b.tie_word_embeddings}


def _qwen3(b) -> tuple[str, dict]:
    window = b.sliding_window_size
    return "qwen3", {**_common(b), "head_dim": b.head_dim, "rope_theta": b.rope_max_wavelength,
                     "use_sliding_window": window is not None, "sliding_window": window,
                     "tie_word_embeddings": b.tie_word_embeddings}


_FIELDS = {"gemma": _gemma, "gemma3": _gemma3, "llama3": _llama3, "mistral": _mistral,
           "qwen2": _qwen2, "qwen3": _qwen3}


def hf_config(family: str, backbone) -> dict:
    """config.json for `backbone` (with "architectures"), checked by converting it back."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from runner.hf.folder import keras_numbers

    model_type, fields = _FIELDS[family](backbone)
    config = AutoConfig.for_model(model_type, **fields).to_dict()
    config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]]
    config["torch_dtype"] = config["dtype"] = "float32"
    back = keras_numbers(family, config)
    own = backbone.get_config()
    differ = sorted(k for k, v in back.items() if k in own and own[k] != v and v is not None)
    if differ:
        raise UserError(f"the {family} model cannot be described as a transformers "
                        f"{model_type} config: {', '.join(differ)} would change; export is not "
                        "supported for this variant")
    return config

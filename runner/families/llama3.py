"""Llama 3 (3, 3.1, 3.2): llama3 rope scaling, tied or untied heads."""

from __future__ import annotations

from runner.families._hf import common_fields
from runner.families.family import Family, Tiny


def to_hf(b) -> tuple[str, dict]:
    fields = {**common_fields(b), "rope_theta": b.rope_max_wavelength,
              "tie_word_embeddings": b.tie_word_embeddings}
    if b.rope_frequency_adjustment_factor is not None:
        fields["rope_scaling"] = {
            "rope_type": "llama3", "factor": b.rope_frequency_adjustment_factor,
            "low_freq_factor": b.rope_low_freq_factor, "high_freq_factor": b.rope_high_freq_factor,
            "original_max_position_embeddings": b.rope_pretraining_sequence_length}
    return "llama", fields


FAMILY = Family(
    name="llama3", backbone="Llama3Backbone", hf_model_types=("llama",),
    converter="convert_llama3", hf_tokenizer_files=(("tokenizer.json", "tokenizer_config.json"),),
    block_stem="transformer_layer_", chat_template="llama3", chat_templates=("llama3",),
    to_hf=to_hf, hf_layer_tensors={"llama": ()}, auto_layout="keras-hub",
    tiny={"llama": Tiny("LlamaConfig", {"rms_norm_eps": 1e-5, "rope_theta": 500000.0},
                        "llama3_bpe")})

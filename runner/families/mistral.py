"""Mistral (7B v0.1-v0.3): sliding-window attention, untied heads."""

from __future__ import annotations

from runner.families._hf import SENTENCEPIECE, common_fields
from runner.families.family import Family, Tiny


def to_hf(b) -> tuple[str, dict]:
    return "mistral", {**common_fields(b), "rope_theta": b.rope_max_wavelength,
                       "head_dim": b.head_dim, "sliding_window": b.sliding_window,
                       "tie_word_embeddings": False}


FAMILY = Family(
    name="mistral", backbone="MistralBackbone", hf_model_types=("mistral",),
    converter="convert_mistral", hf_tokenizer_files=SENTENCEPIECE + (("tekken.json",),),
    block_stem="transformer_layer_", chat_template="mistral", chat_templates=("mistral",),
    to_hf=to_hf, hf_layer_tensors={"mistral": ()},
    auto_layout="mistral",  # keras-hub's MistralBackbone has no get_layout_map
    tiny={"mistral": Tiny("MistralConfig", {"rms_norm_eps": 1e-5}, "mistral_spm")})

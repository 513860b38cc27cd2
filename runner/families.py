"""The model families the runner knows: a closed table from `model.family` to keras-hub's
classes and to the Hugging Face model types that convert into them, so YAML never names code
paths. Pure data: no keras import here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Family:
    backbone: str  # keras_hub.models.<backbone>; the task classes share its prefix
    # Hugging Face config.json "model_type"s keras-hub converts into this backbone, and the
    # converter module (keras_hub/src/utils/transformers/<converter>.py) that does it.
    hf_model_types: tuple = ()
    converter: str = ""
    # Tokenizer files a Hugging Face folder needs: any one of these sets, all of its files.
    hf_tokenizer_files: tuple = ()
    # Feed-forward branch width as a share of `intermediate_dim`: keras-hub's Gemma and Gemma 2
    # halve it for each of the two gating branches (GemmaDecoderBlock); the others do not.
    ffw_share: int = 1
    # conf/layout/<file>.yaml that layout=auto uses where keras-hub has no get_layout_map.
    auto_layout_file: Optional[str] = None

    @property
    def prefix(self) -> str:  # GemmaBackbone -> Gemma: GemmaCausalLM, GemmaTokenizer, ...
        return self.backbone[: -len("Backbone")]


_SENTENCEPIECE = (("tokenizer.model",),)
_BPE = (("tokenizer.json",),)

FAMILIES = {
    "gemma": Family("GemmaBackbone", ("gemma", "gemma2"), "convert_gemma", _SENTENCEPIECE,
                    ffw_share=2),  # Gemma 1 and Gemma 2
    "gemma3": Family("Gemma3Backbone", ("gemma3_text",), "convert_gemma3",
                     _SENTENCEPIECE + _BPE, auto_layout_file="gemma3"),
    "llama3": Family("Llama3Backbone", ("llama",), "convert_llama3",
                     (("tokenizer.json", "tokenizer_config.json"),)),
    "mistral": Family("MistralBackbone", ("mistral",), "convert_mistral",
                      _SENTENCEPIECE + (("tekken.json",),), auto_layout_file="mistral"),
    "qwen2": Family("QwenBackbone", ("qwen2",), "convert_qwen", _BPE),
    "qwen3": Family("Qwen3Backbone", ("qwen3",), "convert_qwen3", _BPE,
                    auto_layout_file="qwen3"),
}


def names() -> list[str]:
    return sorted(FAMILIES)


def by_backbone(class_name: str) -> Optional[Family]:
    return next((f for f in FAMILIES.values() if f.backbone == class_name), None)


def name_of_backbone(class_name: str) -> Optional[str]:
    return next((n for n, f in FAMILIES.items() if f.backbone == class_name), None)


def by_model_type(model_type: str) -> Optional[str]:
    return next((n for n, f in FAMILIES.items() if model_type in f.hf_model_types), None)


def name_of_prefix(prefix: str) -> Optional[str]:
    """Gemma3 -> gemma3: the family whose keras-hub classes start with `prefix`."""
    return next((n for n, f in FAMILIES.items() if f.prefix == prefix), None)

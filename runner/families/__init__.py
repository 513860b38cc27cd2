"""The model families the runner knows: one module per family (runner/families/<name>.py) holds
everything the family is (keras-hub classes, Hugging Face model types and config fields both
ways, layout, remat blocks, chat templates, upstream corrections, its tiny test checkpoint); this
registry finds them (every module of the package that defines FAMILY), so YAML never names code
paths. Adding a family is one module here and its model files in conf/model/. Pure data: no
keras import here."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Optional

from runner.families.family import Family, Tiny

__all__ = ["FAMILIES", "UNSUPPORTED", "Family", "Tiny", "by_backbone", "by_model_type", "correct",
           "names", "name_of_backbone", "name_of_prefix", "unsupported_reason"]


def _family_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "FAMILY"):
            yield module


FAMILIES: dict[str, Family] = {m.FAMILY.name: m.FAMILY for m in _family_modules()}

# Decoder-only text models keras-hub 0.32 converts from Hugging Face that the runner does not
# train: (Hugging Face model_type, keras-hub backbone class) -> why, in keras-hub's own terms.
UNSUPPORTED = {
    ("smollm3", "SmolLM3Backbone"): "keras-hub's SmolLM3 gives several variables one path "
    "(o_proj/kernel, rotary_emb in every layer), so no layout can place them, its LoRA names "
    "match no layer, and its converter drops untied heads, biases and rope scaling",
    ("qwen2_moe", "QwenMoeBackbone"): "keras-hub's Qwen MoE converter mishandles "
    "decoder_sparse_step, mlp_only_layers, sliding windows and tied heads",
    ("qwen3_moe", "Qwen3MoeBackbone"): "keras-hub's Qwen 3 MoE converter mishandles "
    "decoder_sparse_step and mlp_only_layers and reads num_experts, which transformers 5 "
    "configs no longer write",
    ("gpt2", "GPT2Backbone"): "keras-hub's GPT-2 converter ignores n_inner and "
    "layer_norm_epsilon, and GPT-2's fused attention tensor has no exact per-head map",
    ("gpt_oss", "GptOssBackbone"): "keras-hub's GPT-OSS dequantizes MXFP4 experts on load, so "
    "an export would not be the published checkpoint",
}


def unsupported_reason(model_type: str = "", backbone: str = "") -> Optional[str]:
    """Why the runner does not train this model type / keras-hub backbone, or None."""
    return next((why for (t, b), why in UNSUPPORTED.items()
                 if t == model_type or b == backbone), None)


def names() -> list[str]:
    return sorted(FAMILIES)


def by_backbone(class_name: str) -> Optional[Family]:
    return next((f for f in FAMILIES.values() if f.backbone == class_name), None)


def name_of_backbone(class_name: str) -> Optional[str]:
    family = by_backbone(class_name)
    return family.name if family else None


def by_model_type(model_type: str) -> Optional[str]:
    return next((n for n, f in FAMILIES.items() if model_type in f.hf_model_types), None)


def name_of_prefix(prefix: str) -> Optional[str]:
    """Gemma3 -> gemma3: the family whose keras-hub classes start with `prefix`."""
    return next((n for n, f in FAMILIES.items() if f.prefix == prefix), None)


def correct(backbone) -> None:
    """Apply the family's corrections of keras-hub faults (see Family.corrections)."""
    family = by_backbone(type(backbone).__name__)
    for fix in family.corrections if family else ():
        fix(backbone)

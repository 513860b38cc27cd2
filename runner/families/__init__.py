"""The model families the runner knows: one module per family (runner/families/<name>.py) holds
everything the family is (keras-hub classes, Hugging Face model types and config fields both
ways, layout, remat blocks, chat templates, upstream corrections, its tiny test checkpoint); this
registry lists them, so YAML never names code paths. Adding a family is one module here, its line
in _MODULES, and its model files in conf/model/. Pure data: no keras import here."""

from __future__ import annotations

from typing import Optional

from runner.families import gemma, gemma3, llama3, mistral, mixtral, qwen2, qwen3
from runner.families.family import Family, Tiny

__all__ = ["FAMILIES", "Family", "Tiny", "by_backbone", "by_model_type", "correct", "names",
           "name_of_backbone", "name_of_prefix"]

_MODULES = (gemma, gemma3, llama3, mistral, mixtral, qwen2, qwen3)
FAMILIES: dict[str, Family] = {m.FAMILY.name: m.FAMILY for m in _MODULES}


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

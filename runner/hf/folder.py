"""A local Hugging Face (transformers) checkpoint folder: its config, its family, the keras-hub
backbone numbers it converts into, and whether its tokenizer files are there."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

from runner.errors import UserError
from runner.families import FAMILIES, by_model_type, unsupported_reason

CONFIG = "config.json"


def read_config(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{Path(folder) / CONFIG} cannot be read ({exc}); is {folder} a "
                        "complete checkpoint folder?") from None


def converter(family: str):
    """keras-hub's converter module for the family (convert_backbone_config, convert_weights,
    convert_tokenizer)."""
    return importlib.import_module(
        f"keras_hub.src.utils.transformers.{FAMILIES[family].converter}")


def family_of(hf_config: dict, where: str) -> str:
    model_type = hf_config.get("model_type")
    family = by_model_type(str(model_type))
    if family is None:
        known = sorted(t for f in FAMILIES.values() for t in f.hf_model_types)
        why = unsupported_reason(model_type=str(model_type))
        raise UserError(f"model.preset={where} is a Hugging Face checkpoint of model_type "
                        f"'{model_type}', which the runner cannot convert"
                        + (f" ({why})" if why else "") + f"; supported model types: {known}")
    return family


def keras_numbers(family: str, hf_config: dict, where: str = "config.json") -> dict:
    """The backbone's constructor arguments, by keras-hub's converter, plus what it drops.

    keras-hub 0.32's converters ignore `rms_norm_eps` for Gemma and Llama (the backbone then
    uses its default, 1e-6, where Llama 3 needs 1e-5): it is passed here wherever the backbone
    takes `layer_norm_epsilon`. A config.json without a field the converter reads (a hand-edited
    or truncated file) is a UserError naming it.
    """
    import keras_hub

    problem = FAMILIES[family].hf_config_problem
    found = problem(hf_config) if problem else None
    if found:
        raise UserError(f"{where.rstrip('/')}/{CONFIG}: {found}; this checkpoint cannot "
                        "be trained here exactly")
    try:
        _check_query_scale(hf_config)
        numbers = dict(converter(family).convert_backbone_config(hf_config))
    except KeyError as missing:
        raise UserError(f"{where.rstrip('/')}/{CONFIG} has no {missing} field, which keras-hub's "
                        f"{hf_config.get('model_type')} converter reads; the file is incomplete: "
                        "take it from the model's original repository") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where.rstrip('/')}/{CONFIG} has a field of the wrong kind for keras-hub's "
                        f"{hf_config.get('model_type')} converter ({str(exc)[:120]}); take the "
                        "file from the model's original repository") from None
    backbone = getattr(keras_hub.models, FAMILIES[family].backbone)
    takes = inspect.signature(backbone.__init__).parameters
    if "layer_norm_epsilon" in takes and "rms_norm_eps" in hf_config:
        numbers["layer_norm_epsilon"] = hf_config["rms_norm_eps"]
    return numbers


def tokenizer_problem(folder: Path, family: str) -> str | None:
    """None when one of the family's tokenizer file sets is complete in `folder`."""
    options = FAMILIES[family].hf_tokenizer_files
    if any(all((Path(folder) / name).is_file() for name in files) for files in options):
        return None
    wanted = " or ".join("+".join(files) for files in options)
    return (f"model.preset={folder} has no tokenizer files ({wanted}); copy them from the model's "
            "original repository (tokenizer.save_pretrained writes them)")


def _check_query_scale(hf_config: dict) -> None:
    """Gemma 2/3 scale queries by query_pre_attn_scalar ** -0.5; keras-hub can scale by head_dim
    or hidden_size / heads only (query_head_dim_normalize), and its converter silently picks the
    latter for any other value."""
    scalar = hf_config.get("query_pre_attn_scalar")
    if scalar is None:
        return
    allowed = {hf_config.get("head_dim"),
               hf_config["hidden_size"] // hf_config["num_attention_heads"]}
    if scalar not in allowed:
        raise UserError(f"config.json query_pre_attn_scalar={scalar}: keras-hub's "
                        f"{hf_config.get('model_type')} can only scale queries by head_dim or "
                        f"hidden_size / num_attention_heads ({sorted(allowed)}); this checkpoint "
                        "cannot be trained here exactly")

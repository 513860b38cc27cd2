"""What `model.preset` names: where to load it from, and which architecture it has.

Presets are resolved in this order: an existing local folder; a preset shipped in
runner/assets/presets; `hf://` / `kaggle://` handles; keras-hub's built-in names. A handle whose
host cannot be reached fails in seconds with the fix, instead of keras-hub's retry loop.

The architecture (family and backbone constructor numbers) is read from the preset itself
wherever it can be read: a local keras-hub or Hugging Face folder's config.json, or a hub
handle's when online. Otherwise it comes from the model file in conf/model/ whose `preset` is
that name. A model file's numbers describe its own preset only: `model=tiny_gemma
model.preset=gemma_2b_en` plans gemma_2b_en, never the tiny model under another name.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from runner.conf_dir import CONF_DIR
from runner.errors import UserError
from runner.families import name_of_backbone, unsupported_reason
from runner.hf import folder as hf_folder
from runner.network import reachable as _reachable

SHIPPED_PRESETS = Path(__file__).resolve().parent / "assets" / "presets"
REMOTE_HOSTS = {"hf://": "huggingface.co", "kaggle://": "api.kaggle.com"}
KERAS_HUB_HOST = "api.kaggle.com"  # keras-hub's built-in preset names download from Kaggle
KERAS_HUB, TRANSFORMERS = "keras-hub", "transformers"
# keras-hub config entries that are not architecture (layer name, dtype policy, trainability)
_NOT_ARCHITECTURE = {"name", "dtype", "trainable"}


def resolve_preset(preset: str) -> str:
    """Return what keras-hub's from_preset should be given, or raise UserError."""
    if Path(preset).expanduser().is_dir():
        return str(Path(preset).expanduser().resolve())
    if (SHIPPED_PRESETS / preset).is_dir():
        return str(SHIPPED_PRESETS / preset)
    for scheme, host in REMOTE_HOSTS.items():
        if preset.startswith(scheme):
            if not _reachable(host):
                raise UserError(
                    f"model.preset={preset}: {host} cannot be reached (offline?); download the "
                    "preset where there is a network and set model.preset to its local folder")
            return preset
    import keras_hub

    if preset in keras_hub.models.Backbone.presets:
        if not _reachable(KERAS_HUB_HOST):
            raise UserError(
                f"model.preset={preset} is a keras-hub preset downloaded from Kaggle, and "
                f"{KERAS_HUB_HOST} cannot be reached (offline?); download it where there is a "
                "network and set model.preset to its local folder")
        return preset
    shipped = sorted(p.name for p in SHIPPED_PRESETS.iterdir() if p.is_dir())
    raise UserError(
        f"model.preset={preset} is not a folder, a shipped preset {shipped}, an hf:// or kaggle:// "
        "handle, or a keras-hub preset name (list them: python -c \"import keras_hub; "
        "print(sorted(keras_hub.models.CausalLM.presets))\")")


@dataclass(frozen=True)
class Described:
    family: str
    numbers: dict  # the backbone's constructor arguments
    source: str  # where they were read, for the plan's header and messages
    kind: Optional[str] = None  # KERAS_HUB or TRANSFORMERS when read from the checkpoint
    location: Optional[str] = None  # what resolve_preset gave (None: not reachable here)


def _read_remote_config(location: str) -> dict:
    from keras_hub.src.utils.preset_utils import load_json

    try:
        return load_json(location, "config.json")
    except Exception as exc:  # noqa: BLE001 - any download failure means "cannot read it here"
        raise UserError(f"model.preset={location}: its config.json could not be read "
                        f"({type(exc).__name__}); download the preset and set model.preset to "
                        "its local folder") from None


def _from_checkpoint(preset: str, location: str) -> Described:
    local = Path(location).is_dir()
    config = hf_folder.read_config(Path(location)) if local else _read_remote_config(location)
    if "class_name" in config and isinstance(config.get("config"), dict):
        family = name_of_backbone(config["class_name"])
        if family is None:
            why = unsupported_reason(backbone=config["class_name"])
            raise UserError(f"model.preset={preset} is a keras-hub {config['class_name']}, not a "
                            "family the runner trains (runner/families/)"
                            + (f": {why}" if why else ""))
        numbers = {k: v for k, v in config["config"].items() if k not in _NOT_ARCHITECTURE}
        return Described(family, numbers, f"{preset} (keras-hub config.json)", KERAS_HUB,
                         location)
    if "model_type" in config:
        family = hf_folder.family_of(config, preset)
        return Described(family, hf_folder.keras_numbers(family, config, location),
                         f"{preset} (Hugging Face config.json)", TRANSFORMERS, location)
    raise UserError(f"model.preset={preset} is neither a keras-hub preset (config.json with "
                    "class_name) nor a Hugging Face checkpoint (config.json with model_type); "
                    "point it at the folder save_to_preset or save_pretrained wrote")


@functools.lru_cache(maxsize=None)
def _model_files() -> tuple:
    """(file name, preset, family, architecture) of every shipped conf/model file."""
    import yaml

    files = []
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text()) or {}
        files.append((path.stem, spec.get("preset"), spec.get("family"),
                      json.dumps(spec.get("architecture"), sort_keys=True)))
    return tuple(files)


def _claim(model_cfg) -> Optional[tuple]:
    """(family, architecture) the config states for its preset, or None: none stated, or they
    are a shipped model file's numbers for another preset (its `preset` was overridden)."""
    from omegaconf import OmegaConf

    arch = OmegaConf.to_container(model_cfg.architecture) if model_cfg.architecture else None
    if arch is None and model_cfg.family is None:
        return None
    key = json.dumps(arch, sort_keys=True)
    for _, preset, family, architecture in _model_files():
        if (family, architecture) == (model_cfg.family, key) and preset != model_cfg.preset:
            return None
    return model_cfg.family, arch


def _check_claim(model_cfg, claim, described: Described) -> None:
    family, arch = claim
    if family is not None and family != described.family:
        raise UserError(f"model.family={family} but {described.source} is a "
                        f"{described.family} model; drop model.family or fix the model file")
    for key, expected in (arch or {}).items():
        if key not in described.numbers:
            raise UserError(f"model.architecture.{key} is not an argument of the "
                            f"{described.family} backbone; fix the model file")
        if described.numbers[key] != expected:
            raise UserError(f"model.architecture.{key}={expected} but preset {model_cfg.preset} "
                            f"has {described.numbers[key]}; fix the model file")


def from_preset(loader, preset: str, **kwargs):
    """Call a keras-hub from_preset, turning download failures into one clear UserError."""
    try:
        return loader(preset, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if Path(preset).expanduser().is_dir():  # nothing was downloaded: the folder is at fault
            fix = ("its files are damaged, incomplete or not this architecture's; copy or "
                   "download the preset again")
        else:
            fix = ("if this machine is offline, download the preset elsewhere and set "
                   "model.preset to its local folder")
        raise UserError(f"model.preset={preset} could not be loaded ({first[:200]}); {fix}"
                        ) from None
    except Exception as exc:  # requests' ConnectionError is not an OSError subclass everywhere
        if "Connection" in type(exc).__name__ or "resolve" in str(exc):
            raise UserError(
                f"model.preset={preset} could not be downloaded ({type(exc).__name__}); "
                "download it where there is a network and set model.preset to its local folder"
            ) from None
        raise


def describe(model_cfg) -> Described:
    """The preset's family and architecture (see the module docstring), or a UserError."""
    claim = _claim(model_cfg)
    try:
        location = resolve_preset(model_cfg.preset)
    except UserError as unreachable:
        return _offline(model_cfg, claim, unreachable)
    described = _from_checkpoint(model_cfg.preset, location)
    if claim is not None:
        _check_claim(model_cfg, claim, described)
    return described


def _offline(model_cfg, claim, unreachable: UserError) -> Described:
    for name, preset, family, architecture in _model_files():
        if preset == model_cfg.preset and family and architecture != "null":
            return Described(family, json.loads(architecture), f"conf/model/{name}.yaml")
    if claim is not None and claim[0] and claim[1]:
        return Described(claim[0], dict(claim[1]), "the model file (model.architecture)")
    raise UserError(f"{unreachable} (to plan without it, use a model file that states the "
                    "preset's family and architecture: model=<file in conf/model/>)")

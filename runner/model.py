"""Model config -> keras-hub CausalLM (+ LoRA), and the same model with no memory, for planning.

Presets are resolved in this order: an existing local folder; a preset shipped in
runner/assets/presets; `hf://` / `kaggle://` handles; keras-hub's built-in names. A handle whose
host cannot be reached fails in seconds with the fix, instead of keras-hub's retry loop.
"""

from __future__ import annotations

import socket
from pathlib import Path

from runner.errors import UserError

SHIPPED_PRESETS = Path(__file__).resolve().parent / "assets" / "presets"
REMOTE_HOSTS = {"hf://": "huggingface.co", "kaggle://": "api.kaggle.com"}
KERAS_HUB_HOST = "api.kaggle.com"  # keras-hub's built-in preset names download from Kaggle
PROBE_TIMEOUT_S = 3.0


def _reachable(host: str) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


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


def _from_preset(loader, preset: str, **kwargs):
    """Call a keras-hub from_preset, turning download failures into one clear UserError."""
    try:
        return loader(preset, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"model.preset={preset} could not be loaded ({first[:200]}); if this machine is "
            "offline, download the preset elsewhere and set model.preset to its local folder"
        ) from None
    except Exception as exc:  # requests' ConnectionError is not an OSError subclass everywhere
        if "Connection" in type(exc).__name__ or "resolve" in str(exc):
            raise UserError(
                f"model.preset={preset} could not be downloaded ({type(exc).__name__}); "
                "download it where there is a network and set model.preset to its local folder"
            ) from None
        raise


def lora_alpha_of(lora_cfg) -> float:
    return float(lora_cfg.alpha) if lora_cfg.alpha is not None else float(lora_cfg.rank)


def apply_lora(backbone, lora_cfg) -> list[str]:
    """Enable LoRA with rank, alpha and targets honoured exactly; returns the adapted layers.

    keras-hub's Backbone.enable_lora takes no alpha (it leaves alpha = rank); the layers'
    own scale is `lora_alpha / lora_rank`, read at call time, so setting it afterwards is exact.
    """
    if lora_cfg.rank <= 0:
        return []
    targets = list(lora_cfg.targets) if lora_cfg.targets else backbone.default_lora_layer_names()
    backbone.enable_lora(lora_cfg.rank, target_layer_names=targets)
    adapted = [layer for layer in backbone._flatten_layers(include_self=False)
               if getattr(layer, "lora_enabled", False)]
    if not adapted:
        names = sorted({layer.name for layer in backbone._flatten_layers(include_self=False)
                        if layer.weights and hasattr(layer, "enable_lora")})
        raise UserError(f"lora.targets={targets} match no layer of this model; "
                        f"layers that take LoRA: {names}")
    for layer in adapted:
        layer.lora_alpha = lora_alpha_of(lora_cfg)
    return sorted({layer.name for layer in adapted})


def abstract_backbone(model_cfg, lora_cfg):
    """The backbone with shapes, paths and LoRA variables but no memory behind them.

    keras.StatelessScope(initialize_variables=False) keeps initializers from running, so a 27B
    architecture costs seconds and no weight memory. Returns (backbone, backbone class).
    """
    import keras
    import keras_hub

    preset = resolve_preset(model_cfg.preset)
    with keras.StatelessScope(initialize_variables=False):
        backbone = _from_preset(keras_hub.models.Backbone.from_preset, preset,
                                load_weights=False)
        apply_lora(backbone, lora_cfg)
    return backbone


def build_causal_lm(model_cfg, lora_cfg):
    """Load the preset's CausalLM (weights included) and apply LoRA. Call inside the
    distribution's scope so every variable is created with its layout."""
    import keras_hub

    preset = resolve_preset(model_cfg.preset)
    causal_lm = _from_preset(keras_hub.models.CausalLM.from_preset, preset)
    apply_lora(causal_lm.backbone, lora_cfg)
    return causal_lm

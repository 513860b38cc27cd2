"""LoRA adapters: save one from a run, reload it onto its base, merge it into a preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runner.errors import UserError
from runner.rundir import ADAPTER, PROBE, RunDir


def save(causal_lm, folder: RunDir, probe) -> Path:
    """keras-hub's LoRA file, plus the probe (token ids, padding mask, logits) a reload must
    reproduce."""
    causal_lm.backbone.save_lora_weights(str(folder / ADAPTER))
    if probe is not None:  # None in multi-process runs (logits span processes)
        inputs, logits = probe
        np.savez(folder / PROBE, token_ids=inputs["token_ids"],
                 padding_mask=inputs["padding_mask"], logits=logits)
    return folder / ADAPTER


def load(causal_lm, folder: RunDir) -> None:
    """Load a run's adapter onto a base on which LoRA is already enabled with the run's rank,
    alpha and targets (keras-hub's loader would otherwise enable its defaults)."""
    path = folder / ADAPTER
    if not path.is_file():
        raise UserError(f"{path} does not exist: the run had no LoRA, did not finish, or had "
                        "train.save_adapter=false")
    causal_lm.backbone.load_lora_weights(str(path))


def probe_difference(folder: RunDir, logits) -> float:
    """Largest absolute difference from the logits stored when the adapter was saved."""
    if not (folder / PROBE).is_file():
        return float("nan")  # a multi-process run stores no probe
    stored = np.load(folder / PROBE)["logits"]
    return float(np.max(np.abs(stored - logits)))


def save_merged_preset(causal_lm, base_lm, out_dir: Path, info: dict) -> Path:
    """Write base_lm (the same preset, no LoRA, not quantized) with every adapted kernel
    replaced by kernel + alpha / rank * A @ B, as a keras-hub preset folder."""
    base_vars = {v.path: v for v in base_lm.backbone.variables}
    merged = 0
    for layer in causal_lm.backbone._flatten_layers(include_self=False):
        if getattr(layer, "lora_enabled", False):
            # `layer.kernel` is the merged value (EinsumDense/Dense add the scaled product).
            base_vars[layer._kernel.path].assign(layer.kernel)
            merged += 1
    base_lm.save_to_preset(str(out_dir))
    (Path(out_dir) / "merged_from.json").write_text(json.dumps({**info, "layers": merged},
                                                               indent=2) + "\n")
    return Path(out_dir)

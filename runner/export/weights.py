"""A trained keras-hub backbone -> transformers' state dict, through the converter's own map
(runner.hf.ports): the merged model's tensors, and per LoRA layer its Hugging Face module."""

from __future__ import annotations

import numpy as np

from runner import nf4_layers
from runner.hf.ports import Port


def values(backbone, merged: bool = True) -> dict:
    """Every weight by path; merged: LoRA added in (an adapted layer's `kernel` is the kernel
    plus scale A B), else the untouched base; an NF4 layer's kernel is its dequantized one."""
    values = {v.path: v for v in backbone.variables}
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "four_bit", None) is not None:  # runner/nf4_layers.py: no float kernel
            values[f"{layer.path}/kernel"] = layer.kernel if merged else \
                nf4_layers.dequantized_kernel(layer)
        elif merged and getattr(layer, "lora_enabled", False):
            values[layer._kernel.path] = layer.kernel
    return {path: np.asarray(value, dtype=np.float32) for path, value in values.items()}


def state_dict(backbone, port_list: list[Port], merged: bool = True) -> dict:
    """transformers' tensors (float32) of the backbone (see `values`)."""
    by_path = values(backbone, merged)
    return {p.hf_key: np.ascontiguousarray(p.to_hf(by_path[p.path])) for p in port_list}

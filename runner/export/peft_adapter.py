"""Keras LoRA factors -> a PEFT LoRA adapter that computes exactly the same weight update.

Keras puts LoRA on the kernel's last axis: A has the kernel's shape with the last axis replaced
by the rank, B is (rank, last axis). For a Dense or an attention output kernel that is the usual
LoRA. For a query/key/value kernel (hidden, heads, head_dim) the head axis is an *output* axis of
the Hugging Face projection, so every head has its own A and all share B: a LoRA of rank
heads x rank in PEFT's terms, with a block-diagonal B. Modules get one rank (the largest),
padded with zero rows and columns, so vLLM and PEFT need no per-module rank_pattern; alpha is set
so PEFT's alpha / r equals Keras's alpha / rank.
"""

from __future__ import annotations

import math

import numpy as np

from runner.errors import UserError
from runner.hf.ports import Port


def _axes(port: Port, in_features: int) -> tuple[list[int], list[int]]:
    """The kernel's leading axes that index the projection's outputs and inputs."""
    rows, cols = np.divmod(port.index, in_features)
    outputs, inputs = [], []
    for axis in range(port.index.ndim - 1):
        row_varies = np.any(np.diff(rows, axis=axis) != 0)
        col_varies = np.any(np.diff(cols, axis=axis) != 0)
        if row_varies and col_varies:
            raise RuntimeError(f"{port.hf_key}: kernel axis {axis} mixes inputs and outputs")
        (outputs if row_varies else inputs).append(axis)
    return outputs, inputs


def factors(port: Port, lora_a: np.ndarray, lora_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) in PEFT's layout, (R, in) and (out, R), with B @ A = the Keras A B on port.hf_key."""
    out_features, in_features = port.hf_shape
    rank = lora_b.shape[0]
    outputs, inputs = _axes(port, in_features)
    last = port.index.ndim - 1
    heads = math.prod(port.index.shape[a] for a in outputs)
    # A: (outputs..., rank, inputs...) -> (heads * rank, prod(inputs)), columns where HF has them
    a = np.transpose(lora_a, outputs + [last] + inputs).reshape(heads * rank, -1)
    first = tuple(0 if ax in outputs or ax == last else slice(None) for ax in range(last + 1))
    cols = (port.index[first] % in_features).reshape(-1)
    peft_a = np.zeros((heads * rank, in_features), np.float32)
    peft_a[:, cols] = a
    # B: block-diagonal, head h's rows (where HF puts head h's outputs) use block h
    # (the remaining axes are the output axes in order, then the last: heads-major like A)
    first = tuple(0 if ax in inputs else slice(None) for ax in range(last + 1))
    rows = (port.index[first] // in_features).reshape(heads, -1)
    peft_b = np.zeros((out_features, heads * rank), np.float32)
    for h in range(heads):
        peft_b[rows[h], h * rank:(h + 1) * rank] = lora_b.T
    return peft_a, peft_b


def pad(a: np.ndarray, b: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero rows of A and columns of B up to `rank`: the product does not change."""
    extra = rank - a.shape[0]
    return np.pad(a, ((0, extra), (0, 0))), np.pad(b, ((0, 0), (0, extra)))


def adapter(backbone, port_list: list[Port]) -> tuple[dict, dict]:
    """(PEFT tensors, adapter_config fields) for every LoRA layer of `backbone`."""
    by_path = {p.path: p for p in port_list}
    found = {}
    for layer in backbone._flatten_layers(include_self=False):
        if getattr(layer, "lora_enabled", False):
            kernel = f"{layer.path}/kernel"  # an NF4 layer's too (it stores no float kernel)
            port = by_path[kernel]
            if port.keras_positions is not None:  # a kernel stacked from several tensors
                raise UserError(f"{kernel} holds several Hugging Face tensors; a "
                                "LoRA adapter on it has no PEFT form: leave it out of "
                                "lora.targets")
            module = port.hf_key[: -len(".weight")]
            found[module] = (factors(port, np.asarray(layer.lora_kernel_a, np.float32),
                                     np.asarray(layer.lora_kernel_b, np.float32)),
                             layer.lora_alpha / layer.lora_rank)
    rank = max(a.shape[0] for (a, _), _ in found.values())
    scales = {scale for _, scale in found.values()}
    tensors = {}
    for module, ((a, b), _) in found.items():
        a, b = pad(a, b, rank)
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.ascontiguousarray(a)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.ascontiguousarray(b)
    targets = sorted({m.rsplit(".", 1)[-1] for m in found})
    return tensors, {"r": rank, "lora_alpha": scales.pop() * rank, "target_modules": targets}

"""A step time predicted from the compiled step: the roofline of its FLOPs, its memory traffic
and its collectives, per device, on the planned accelerator.

XLA's cost analysis of the compiled SPMD program gives FLOPs and bytes accessed per device;
the collectives are read from the optimized HLO (every all-reduce, all-gather, reduce-scatter,
all-to-all and collective-permute, with its result size and its group size). Prediction:

    compute    = FLOPs / peak FLOP/s
    memory     = bytes accessed / memory bandwidth
    collective = sum over collectives of the bytes each device sends / interconnect bandwidth
                 (ring algorithms: all-reduce 2(n-1)/n of the array, all-gather and all-to-all
                 (n-1)/n of the result, reduce-scatter (n-1) x the result, permute the result)
    step       = max(compute, memory) + collective

Compute and memory overlap (a roofline); collectives are counted as not overlapped, which
XLA's async collectives often beat, so the step is an upper estimate of a well-fed step (no
input pipeline, no host). The TPU compiler's own estimate ("optimal_seconds" in its cost
analysis) is kept beside it when it gives one.

XLA's cost analysis counts a loop's body once (measured: a lax.scan of four matmuls costs one).
The runner's loops: gradient accumulation (runner.plan scales the step's FLOPs and bytes by the
micro-batches) and the loss's tiles (train.loss_tiles > 1: the output layer's cost is counted
for one tile; the prediction is low by the other tiles' share, printed beside it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 0.5, "u4": 0.5,
             "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
             "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}
_KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_INSTRUCTION = re.compile(
    r"=\s*(?P<shape>\([^=]*?\)|[\w\[\],{}:()]+?)\s+(?P<op>" + "|".join(_KINDS) +
    r")(?P<start>-start)?\((?P<rest>.*)$")
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+(?:fn)?)?)\[([\d,]*)\]")
_GROUPS_LIST = re.compile(r"replica_groups=\{\{([\d,]*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]")
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")
_MESH_AXIS = re.compile(r"'([^']+)'=(\d+)")


def _array_bytes(shape: str, drop_scalars: bool = False) -> list[float]:
    """Bytes of each array in an HLO shape (a tuple's elements in order); drop_scalars leaves
    out rank-0 arrays (the u32[] contexts of an async collective's start)."""
    out = []
    for dtype, dims in _ARRAY.findall(shape):
        sizes = [int(d) for d in dims.split(",") if d]
        if dtype in _ITEMSIZE and (sizes or not drop_scalars):
            n = 1
            for d in sizes:
                n *= d
            out.append(n * _ITEMSIZE[dtype])
    return out


def _group_size(rest: str, n_devices: int) -> int:
    listed = _GROUPS_LIST.search(rest)
    if listed:
        return max(1, len([d for d in listed.group(1).split(",") if d]))
    iota = _GROUPS_IOTA.search(rest)  # [groups,size]<=[devices]
    if iota:
        return int(iota.group(2))
    mesh = _GROUPS_MESH.search(rest)  # mesh['axis_0'=2,'axis_1'=4] {'axis_0'}: over axis_0
    if mesh:
        sizes = {name: int(size) for name, size in _MESH_AXIS.findall(mesh.group(1))}
        n = 1
        for name in re.findall(r"'([^']+)'", mesh.group(2)):
            n *= sizes.get(name, 1)
        return n
    return n_devices  # replica_groups={}: every device


def collective_bytes(hlo_text: str, n_devices: int) -> dict[str, float]:
    """Bytes each device sends, by collective kind, over one step of the optimized HLO."""
    sent = {kind: 0.0 for kind in _KINDS}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.search(line)
        if not m:
            continue
        kind, start = m.group("op"), bool(m.group("start"))
        arrays = _array_bytes(m.group("shape"), drop_scalars=start)
        if start and kind in ("all-gather", "collective-permute") and len(arrays) > 1:
            arrays = arrays[len(arrays) // 2:]  # (operands, results[, contexts]): the results
        size = sum(arrays)
        n = _group_size(m.group("rest"), n_devices)
        if n <= 1 and kind != "collective-permute":
            continue
        sent[kind] += {"all-reduce": 2 * (n - 1) / n * size, "all-gather": (n - 1) / n * size,
                       "reduce-scatter": (n - 1) * size, "all-to-all": (n - 1) / n * size,
                       "collective-permute": size}[kind]
    return sent


@dataclass(frozen=True)
class StepCost:
    """What the compiled step does per device."""
    flops: float
    bytes_accessed: float
    collectives: dict  # kind -> bytes sent per device
    compiler_seconds: Optional[float] = None  # the TPU compiler's own estimate, if any

    @property
    def collective_bytes(self) -> float:
        return sum(self.collectives.values())


def step_cost(compiled, n_devices: int) -> StepCost:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return StepCost(flops=float(analysis.get("flops", 0.0)),
                    bytes_accessed=float(analysis.get("bytes accessed", 0.0)),
                    collectives=collective_bytes(compiled.as_text(), n_devices),
                    compiler_seconds=analysis.get("optimal_seconds"))


@dataclass(frozen=True)
class Prediction:
    compute_s: float
    memory_s: float
    collective_s: float
    tokens_per_step: int
    model_flops: float  # per step, all devices (runner/flops.py)
    peak_flops_total: float

    @property
    def step_s(self) -> float:
        return max(self.compute_s, self.memory_s) + self.collective_s

    @property
    def bound(self) -> str:
        parts = {"compute": self.compute_s, "memory": self.memory_s,
                 "collectives": self.collective_s}
        return max(parts, key=parts.get)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_s if self.step_s else 0.0

    @property
    def mfu(self) -> float:
        return self.model_flops / self.step_s / self.peak_flops_total if self.step_s else 0.0


def predict(cost: StepCost, peak_flops: float, memory_bandwidth: float, interconnect: float,
            n_devices: int, tokens_per_step: int, model_flops: float) -> Prediction:
    """peak_flops, memory_bandwidth, interconnect: per device (runner.plan.targets)."""
    return Prediction(compute_s=cost.flops / peak_flops,
                      memory_s=cost.bytes_accessed / memory_bandwidth,
                      collective_s=cost.collective_bytes / interconnect if interconnect else 0.0,
                      tokens_per_step=tokens_per_step, model_flops=model_flops,
                      peak_flops_total=peak_flops * n_devices)

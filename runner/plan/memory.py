"""Bytes per device of a planned run: weights, LoRA, gradients, optimizer state, activations,
against the memory of the device it will run on.

Sizes use Keras's convention: 1 GB = 2**30 bytes (model.summary() prints 2.5B float32 params as
"9.34 GB"), so plan totals compare directly with what Keras and JAX's memory stats report.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from runner.errors import UserError
from runner.plan.targets import TABLE

GB = 2**30
# Memory one JAX device sees, in GB, by `plan.accelerator` name (runner/plan/targets.py, with
# the peaks and bandwidths the step-time prediction uses, and their sources).
ACCELERATORS = {name: acc.memory_gb for name, acc in TABLE.items()}
# Bytes per activation element by dtype policy (train.precision): mixed precision computes in bf16.
_COMPUTE_ITEMSIZE = {"float32": 4, "mixed_bfloat16": 2, "bfloat16": 2, "mixed_float16": 2,
                     "float16": 2}
# A plan fits when what it needs leaves this share of the device free. For the estimate: the
# compiled program's own code, which it does not estimate (TPU programs live in HBM: 0.19 to
# 0.55 GB per device over benchmarks/calibrate.py's grid), and the compiler's scheduling
# choices the calibration names as exceptions (README). For the compiled figure (`--compile`), which has them: the runtime's own reserve
# (a TPU v3 core offers programs 15.48 of its 16 GiB), allocator fragmentation, and the input
# batches being transferred while a step runs.
HEADROOM = 0.10


def compute_itemsize(policy: str) -> int:
    return _COMPUTE_ITEMSIZE.get(policy, 4)


@dataclass(frozen=True)
class Dimensions:
    """The transformer sizes that set activation memory (from the backbone's config)."""
    layers: int
    hidden: int
    query_heads: int
    kv_heads: int
    head_dim: int
    ffw: int  # width of one feed-forward branch (gate and up each have this many units)
    vocabulary: int


@dataclass(frozen=True)
class Memory:
    """Bytes per device, by what holds them."""
    frozen_weights: int
    trainable_weights: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return (self.frozen_weights + self.trainable_weights + self.gradients
                + self.optimizer_state + self.activations)


@dataclass(frozen=True)
class DeviceMemory:
    bytes: Optional[int]  # None: not known (a topology this machine does not have, no figure)
    source: str  # where the figure comes from, in words a user can act on


@dataclass(frozen=True)
class Splits:
    """How many ways the model axis splits each kind of activation: the way the layout splits
    the weights that make them (the query and key kernels' head dimension, the feed-forward
    gate's width, the output layer's vocabulary). keras-hub's Llama and Qwen maps put the
    heads on the batch axis, so their attention is not split over the model axis at all."""
    query_heads: int = 1
    kv_heads: int = 1
    ffw: int = 1
    vocabulary: int = 1


def model_splits(plan, dims: Dimensions, model_axis: str) -> Splits:
    """The Splits the plan's own weight specs give; where the family's weights are not found by
    name, the whole model axis (the layout's intent)."""
    size = plan.axis_sizes.get(model_axis, 1)

    def split(suffixes, width: int) -> int:
        for entry in plan.entries:
            if entry.kind == "weight" and entry.path.endswith(suffixes):
                for n, axis in zip(entry.shape, entry.spec):
                    if n == width:
                        return size if axis == model_axis else 1
        return size
    head = ("reverse_embeddings",) if any(e.path.endswith("reverse_embeddings")
                                          for e in plan.entries) else ("token_embedding/embeddings",)
    return Splits(query_heads=split(("query/kernel",), dims.query_heads),
                  kv_heads=split(("key/kernel",), dims.kv_heads),
                  ffw=split(("gating/kernel", "gate_dense/kernel", "gate_proj/kernel"), dims.ffw),
                  vocabulary=split(head, dims.vocabulary))


def activation_bytes(dims: Dimensions, batch_per_device: int, sequence_length: int,
                     splits: Splits, compute_itemsize: int, remat: str = "none",
                     loss_tiles: int = 1) -> int:
    """What the step holds at its peak beyond the state, per device: calibrated against the TPU
    compiler (benchmarks/calibrate.py; the table and its exceptions are in the README).

    Per token and layer, the elements the backward pass needs: the residual stream and its
    norms around attention and the feed-forward block (6 x hidden), q, k, v and the attention
    output (2 x (query_heads + kv_heads) x head_dim), the feed-forward gate, up, activation and
    product (4 x ffw), each in the compute dtype and again in float32 (norms, residual sums and
    the gated product are computed in float32): compute itemsize + 4 bytes; and the attention
    scores (query_heads x sequence_length), float32 scores beside their softmax in the compute
    dtype: 4 + compute itemsize bytes. Head-, feed-forward- and vocabulary-sized tensors are
    split over the model axis as their weights are (`splits`); the residual stream is not.
    LoRA does not shrink this: gradients flow back through every layer to the first adapter.

    The loss (runner/token_loss.py) holds one tile's logits (1 / loss_tiles of the sequence)
    in the compute dtype, in float32, their exponentials, softmax and gradient and the
    gradient's compute-dtype copy: 8 x compute itemsize + 4 bytes per logit as the TPU compiler
    schedules it (20 in bfloat16, 36 in float32), at the end of the forward pass, while every
    layer's activations are still held.

    remat=blocks (train.remat): each block keeps only its input (hidden per token), and the
    peak is the larger of the loss tile (in the forward pass) and one block's activations
    while it is recomputed (in the backward pass).
    """
    tokens = batch_per_device * sequence_length
    per_token_layer = (
        (6 * dims.hidden
         + 2 * (dims.query_heads / splits.query_heads + dims.kv_heads / splits.kv_heads)
         * dims.head_dim
         + 4 * dims.ffw / splits.ffw) * (compute_itemsize + 4)
        + dims.query_heads / splits.query_heads * sequence_length * (4 + compute_itemsize))
    logits = tokens / loss_tiles * dims.vocabulary / splits.vocabulary \
        * (8 * compute_itemsize + 4)
    if remat == "blocks":
        kept = tokens * dims.layers * dims.hidden * compute_itemsize
        return int(math.ceil(kept + max(logits, tokens * per_token_layer)))
    return int(math.ceil(dims.layers * tokens * per_token_layer + logits))


def memory_per_device(plan, dims: Optional[Dimensions], batch_size: int, sequence_length: int,
                      batch_axis: str, model_axis: str, compute_itemsize: int,
                      remat: str = "none", micro_batches: int = 1,
                      loss_tiles: int = 1) -> Memory:
    """Sum the plan's entries by kind and add the activation estimate, for one micro-batch
    (train.gradient_accumulation_steps: their gradients are summed in float32, one more
    gradient-sized buffer)."""
    weights = [e for e in plan.entries if e.kind != "optimizer"]
    trainable = sum(e.bytes_per_device for e in weights if e.trainable)
    sizes = plan.axis_sizes
    activations = 0
    if dims is not None:
        per_device = max(1, batch_size // micro_batches // sizes.get(batch_axis, 1))
        activations = activation_bytes(dims, per_device, sequence_length,
                                       model_splits(plan, dims, model_axis), compute_itemsize,
                                       remat, loss_tiles)
    # trainable weights are float32 or 16-bit floats
    summed = sum(e.bytes_per_device * (2 if "16" in e.dtype else 1)
                 for e in weights if e.trainable) if micro_batches > 1 else 0
    return Memory(
        frozen_weights=sum(e.bytes_per_device for e in weights if not e.trainable),
        trainable_weights=trainable,
        # one gradient per trainable weight, in the weight's dtype (and their float32 sum)
        gradients=trainable + summed,
        optimizer_state=sum(e.bytes_per_device for e in plan.entries if e.kind == "optimizer"),
        activations=activations,
    )


def _host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def local_device_memory() -> DeviceMemory:
    """What one of this machine's devices has: the accelerator's own figure, or host RAM shared
    by the virtual CPU devices."""
    import jax

    devices = jax.local_devices()
    device = devices[0]
    if device.platform == "cpu":
        return DeviceMemory(_host_memory_bytes() // len(devices),
                            f"this machine: {_host_memory_bytes() / GB:.1f} GB RAM shared by "
                            f"{len(devices)} CPU devices")
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return DeviceMemory(None, f"this machine's {device.device_kind} reports no memory "
                                  "limit; set plan.accelerator or plan.device_memory_gb")
    return DeviceMemory(int(stats["bytes_limit"]),
                        f"this machine: {device.device_kind}, as JAX reports it")


def device_memory(plan_cfg, planned_devices: int, local_device_count: int) -> DeviceMemory:
    """plan.device_memory_gb, else plan.accelerator's figure, else this machine's devices when
    the plan is for them; otherwise unknown (planning a pod slice from a laptop)."""
    if plan_cfg.device_memory_gb is not None:
        if plan_cfg.device_memory_gb <= 0:
            raise UserError(f"plan.device_memory_gb={plan_cfg.device_memory_gb} must be positive")
        return DeviceMemory(int(plan_cfg.device_memory_gb * GB),
                            f"plan.device_memory_gb={plan_cfg.device_memory_gb:g}")
    if plan_cfg.accelerator is not None:
        name = str(plan_cfg.accelerator).lower()
        if name not in ACCELERATORS:
            raise UserError(f"plan.accelerator={plan_cfg.accelerator} is not known; use one of "
                            f"{sorted(ACCELERATORS)}, or give plan.device_memory_gb")
        return DeviceMemory(ACCELERATORS[name] * GB,
                            f"plan.accelerator={name}: {ACCELERATORS[name]} GB per device")
    if local_device_count == planned_devices:
        return local_device_memory()
    return DeviceMemory(None, f"unknown: the plan is for {planned_devices} devices this machine "
                              "does not have; set plan.accelerator=NAME (e.g. tpu-v5p, "
                              "h100-80gb) or plan.device_memory_gb=N")


def fit_problem(memory: Memory, device: DeviceMemory) -> Optional[str]:
    """None when the estimate fits (or nothing is known to compare with); else the problem and
    the fix."""
    return need_problem(memory.total, "the estimate of", device)


def need_problem(needed: int, what: str, device: DeviceMemory) -> Optional[str]:
    """None when `needed` bytes per device fit with the headroom; else the problem, naming
    what needs them ("the estimate of", "the compiled step's figure (TPU v3 ...) of"), and
    the fix."""
    if device.bytes is None:
        return None
    usable = device.bytes * (1 - HEADROOM)
    if needed <= usable:
        return None
    return (f"{what} {needed / GB:.2f} GB per device does not fit in "
            f"{usable / GB:.2f} GB ({100 - HEADROOM * 100:.0f}% of {device.bytes / GB:.2f} GB, "
            f"{device.source}); split more (a larger model or batch axis in mesh.shape), freeze "
            "more (LoRA, quant=int8), or lower train.batch_size / train.sequence_length"
            + ("; to size it for other hardware, set plan.accelerator or plan.device_memory_gb"
               if device.source.startswith("this machine") else ""))


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's VmHWM is the process image's own; getrusage's
    ru_maxrss also keeps the memory of the process it was forked from (a command started by a
    4 GB pytest or sweep parent reports 4 GB before it allocates anything), so it is only the
    fallback where /proc is not there."""
    import resource

    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB on Linux


def measured_peak() -> dict:
    """What this process used at its peak: each accelerator's peak bytes in use as JAX reports
    them (the most of this process's devices), and the host's peak resident memory (the only
    figure on CPU, where the virtual devices share the host's memory)."""
    import jax

    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    return {"peak_device_bytes": max(peaks) if peaks else None,
            "peak_host_rss_bytes": peak_rss_bytes()}

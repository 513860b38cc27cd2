"""The accelerators `plan.accelerator` names: memory, peak compute, memory and interconnect
bandwidth per JAX device, and for TPUs the topology their own compiler is asked to compile for.

Figures are per chip on the vendors' pages and divided here by the JAX devices a chip shows
(TPU v2/v3: each of a chip's two TensorCores is a device; v4 and v5p run as one "megacore"
device per chip; v5e and v6e have one core per chip). Interconnect is per direction (pages give
bidirectional totals, or per-direction Gbps; NVLink's 900 GB/s is 450 each way), summed over
all of a chip's links: a ring over one mesh axis of a TPU torus uses two of a chip's four (2-D)
or six (3-D) links, so collective times predicted from it are optimistic by up to 2-3x. Sources, read
2026-12-02:
- TPU v3, v4, v5e, v5p, v6e: cloud.google.com/tpu/docs/{v3,v4,v5e,v5p,v6e} (ICI per chip: the
  v5e/v5p/v6e pages; v3/v4 pages give only pod bisection figures, so their ICI is from the TPU
  papers: Norrie et al., IEEE Micro 2021, four 656 Gbit/s links per v3 chip; Jouppi et al.,
  ISCA 2023, six 50 GB/s links per v4 chip; TPU v2 likewise from the 2021 paper).
- NVIDIA: the product datasheets (dense bf16 = half the sparse figure; T4 and V100 have no
  bf16, their fp16 tensor-core peak is used); AMD MI300X: ROCm's GPU specifications page
  (Infinity Fabric per link is not on an AMD page: 64 GB/s per direction from reviews).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from runner.errors import UserError

T, G = 1e12, 1e9


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory_gb: float  # per JAX device, GB = 2**30 bytes
    peak_flops: float  # dense bfloat16 FLOP/s per device
    memory_bandwidth: float  # bytes/s per device
    interconnect: float  # bytes/s per device, one direction, to the other devices of the slice
    tpu: Optional[str] = None  # TPU generation as libtpu names it in a topology ("v5p")
    devices_per_chip: int = 1
    torus_dims: int = 2  # TPU topology dimensions: v4 and v5p are 3-D
    chip_config: str = "default"  # libtpu's chip_config_name: "megacore" for v4 and v5p
    # float32 matmuls, FLOP/s per device: a TPU runs them as bfloat16 passes (jax's default
    # precision), so its peak; GPUs as TF32 (half the dense bf16 peak), T4 and V100 in fp32
    float32_flops: Optional[float] = None

    def peak_for(self, precision: str) -> float:
        """The matmul peak a step at train.precision can reach."""
        if str(precision) != "float32" or self.tpu:
            return self.peak_flops
        return self.float32_flops or self.peak_flops / 2


def _tpu(name, gen, memory_chip, tflops_chip, hbm_gbs_chip, ici_gbs_chip, per_chip=1, dims=2,
         chip_config="default"):
    return Accelerator(name, memory_chip / per_chip, tflops_chip * T / per_chip,
                       hbm_gbs_chip * G / per_chip, ici_gbs_chip * G / per_chip, gen, per_chip,
                       dims, chip_config)


def _gpu(name, memory, tflops, hbm_gbs, link_gbs, fp32_tflops=None):
    return Accelerator(name, memory, tflops * T, hbm_gbs * G, link_gbs * G,
                       float32_flops=fp32_tflops and fp32_tflops * T)


TABLE = {a.name: a for a in [
    _tpu("tpu-v2", "v2", 16, 45, 700, 4 * 496 / 8, per_chip=2),
    _tpu("tpu-v3", "v3", 32, 123, 900, 4 * 656 / 8, per_chip=2),
    _tpu("tpu-v4", "v4", 32, 275, 1200, 6 * 50, dims=3, chip_config="megacore"),
    _tpu("tpu-v5e", "v5e", 16, 197, 819, 200),
    _tpu("tpu-v5p", "v5p", 95, 459, 2765, 600, dims=3, chip_config="megacore"),
    _tpu("tpu-v6e", "v6e", 32, 918, 1638, 400),
    _gpu("t4", 16, 65, 320, 16, 8.1),  # fp16 tensor cores; PCIe Gen3 x16
    _gpu("v100-16gb", 16, 125, 900, 150, 15.7),  # fp16 tensor cores; NVLink 300 GB/s both ways
    _gpu("v100-32gb", 32, 125, 900, 150, 15.7),
    _gpu("a10g", 24, 70, 600, 32),  # AWS publishes no bf16 figure; A10's dense bf16 is 125
    _gpu("l4", 24, 121, 300, 32),  # PCIe Gen4 x16
    _gpu("l40s", 48, 362, 864, 32),
    _gpu("a100-40gb", 40, 312, 1555, 300),
    _gpu("a100-80gb", 80, 312, 2039, 300),
    _gpu("h100-80gb", 80, 989, 3350, 450),
    _gpu("h200", 141, 989, 4800, 450),
    _gpu("mi300x", 192, 1307, 5300, 7 * 64),
]}


def accelerator(name) -> Accelerator:
    key = str(name).lower()
    if key not in TABLE:
        raise UserError(f"plan.accelerator={name} is not known; use one of {sorted(TABLE)}, "
                        "or give plan.device_memory_gb")
    return TABLE[key]


def _balanced(chips: int, dims: int) -> Optional[list[int]]:
    """A power-of-two chip count as the most even torus, smallest side first as Cloud TPU
    names slices: 16 -> 4x4, 32 -> 4x8, 32 (3-D) -> 2x4x4, 4 (3-D) -> 2x2x1; None when it is
    no power of two (the user names the topology then)."""
    if chips < 1 or chips & (chips - 1):
        return None
    sizes = [1] * dims
    for _ in range(int(math.log2(chips))):
        sizes[sizes.index(min(sizes))] *= 2
    sizes.sort()
    return [s for s in sizes if s > 1] + [s for s in sizes if s == 1]


def topology_name(acc: Accelerator, n_devices: int, given: Optional[str]) -> str:
    """The topology libtpu compiles for: plan.topology as given, else the most even torus of the
    chips n_devices make."""
    if given:
        if ":" in given and given.split(":", 1)[0] != acc.tpu:
            raise UserError(f"plan.topology={given} is not a slice of plan.accelerator="
                            f"{acc.name}; give {acc.tpu}:{given.split(':', 1)[1]}, or the "
                            "accelerator of that topology")
        return given if ":" in given else f"{acc.tpu}:{given}"
    chips, rest = divmod(n_devices, acc.devices_per_chip)
    sizes = _balanced(chips, acc.torus_dims) if not rest else None
    if sizes is None:
        raise UserError(
            f"plan.accelerator={acc.name}: {n_devices} devices are no TPU slice this runner can "
            f"name ({acc.devices_per_chip} device(s) per chip, a power of two chips); "
            f"set plan.topology (e.g. plan.topology={acc.tpu}:"
            f"{'x'.join(['2'] * acc.torus_dims)}) to the slice's topology")
    return f"{acc.tpu}:{'x'.join(map(str, sizes))}"

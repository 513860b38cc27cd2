"""The plan's predicted step time against the step time measured, on this machine's devices:

    python benchmarks/predict.py                                   # gemma3_270m, 8 x 64, float32
    python benchmarks/predict.py --models tiny_gemma,gemma3_270m --batch 8 --length 128

For each model: `python -m runner.plan ... --compile --json` on one device (the compiled step's
FLOPs, bytes accessed and collectives: runner/plan/roofline.py), this machine's own peak
measured here (a float32 matmul, runner/flops.py) and its memory bandwidth (a jitted array
scale: one read and one write), the roofline prediction from those, then the same run as
`python -m runner` (random weights, synthetic tokens, LoRA rank 4) for its measured steady step
time (benchmarks/gpu.py's runner program). On a GPU, every program gets the first GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/predict.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma3_270m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.tiny = False
    return args


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s of one device streaming an array through a jitted scale (read + write)."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    nbytes = x.nbytes
    # donated: the result reuses the input's memory, so no call pays for fresh pages
    scale = jax.jit(lambda a: a * 1.0001, donate_argnums=0)
    x = scale(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        x = scale(x).block_until_ready()
        best = min(best, time.perf_counter() - started)
    return 2 * nbytes / best


def compiled_cost(model: str, args, work: Path) -> dict:
    from gpu import _env, runner_overrides

    overrides = [o for o in runner_overrides(model, args, work / "unused")
                 if not o.startswith("hydra.")]
    proc = subprocess.run([sys.executable, "-m", "runner.plan", *overrides, "cpu_devices=1",
                           "--compile", "--json", str(work / f"{model}.json")], cwd=work,
                          env=_env(args), capture_output=True, text=True)
    if proc.returncode not in (0, 2):
        raise RuntimeError(f"runner.plan on {model} exited {proc.returncode}:\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads((work / f"{model}.json").read_text())


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
    from runner import startup

    startup.set_process_environment(1)
    from gpu import run_program
    from runner.flops import peak_matmul_flops
    from runner.plan import roofline

    peak, bandwidth = peak_matmul_flops(), memory_bandwidth()
    lines = [f"This machine, one device: matmul peak {peak / 1e9:,.1f} GFLOP/s, memory "
             f"bandwidth {bandwidth / 1e9:,.1f} GB/s (measured); batch {args.batch} x "
             f"{args.length}, {args.precision}, LoRA rank {args.rank}.", "",
             "| model | FLOPs / step | bytes accessed | compute | memory | predicted | "
             "measured | predicted / measured |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="predict-") as tmp:
        for model in args.models.split(","):
            plan = compiled_cost(model, args, Path(tmp))
            cost = plan["compiled"]["cost"]
            step = roofline.StepCost(cost["flops"], cost["bytes_accessed"],
                                     cost["collective_bytes"])
            predicted = roofline.predict(step, peak, bandwidth, 0.0, 1,
                                         args.batch * args.length, 0.0)
            measured = run_program("runner", model, args, Path(tmp))["step_time_s"]
            lines.append(f"| {model} | {step.flops / 1e9:,.1f} GFLOP | "
                         f"{step.bytes_accessed / 2**30:,.2f} GB | "
                         f"{predicted.compute_s * 1e3:,.0f} ms | {predicted.memory_s * 1e3:,.0f} ms"
                         f" | {predicted.step_s * 1e3:,.0f} ms | {measured * 1e3:,.0f} ms | "
                         f"{predicted.step_s / measured:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

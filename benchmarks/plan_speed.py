"""Wall time and peak memory of `python -m runner.plan` for large architectures (no weights).

    python benchmarks/plan_speed.py            # prints a Markdown table

Each plan runs as its own process, as a user runs it; wall time includes Python start-up and
imports, peak memory is the process's maximum resident set size. Target: a 27B plan in under
30 s and under 2 GB on a laptop-class CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

CASES = [
    ["model=gemma_7b_en", "mesh=1x8", "layout=gemma_model_parallel", "plan.accelerator=a100-80gb"],
    ["model=gemma_7b_en", "mesh=1x8", "layout=gemma_model_parallel", "lora=none",
     "plan.accelerator=a100-80gb"],
    ["model=gemma2_9b_en", "mesh=2x8"],
    ["model=gemma2_27b_en", "mesh=2x8"],
    ["model=gemma2_27b_en", "mesh.shape=[4,16]", "lora=none"],
    ["model=gemma3_27b_text", "mesh.shape=[4,16]", "plan.accelerator=tpu-v5p"],
]


def measure(overrides: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GB, exit code) of one plan process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "runner.plan", *overrides],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, in KB on Linux
    return time.perf_counter() - start, usage.ru_maxrss / 2**20, os.waitstatus_to_exitcode(status)


def main() -> None:
    print("| plan | wall s | peak RSS GB | exit |")
    print("|---|---:|---:|---:|")
    for overrides in CASES:
        wall, peak, code = measure(overrides)
        print(f"| `{' '.join(overrides)}` | {wall:.1f} | {peak:.2f} | {code} |", flush=True)


if __name__ == "__main__":
    main()

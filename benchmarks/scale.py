"""Real architectures on this machine, in one command: a real model file trained with random
weights on the 8 virtual CPU devices, and XLA's compiled memory beside the plan's estimate.

    python benchmarks/scale.py                 # prints the table, writes benchmarks/SCALE.md
    python benchmarks/scale.py --steps 10

Rows:
- training: `python -m runner model=gemma3_270m model.weights=random dataset=synthetic` (LoRA
  rank 4, batch 8 x 128, mesh 2 x 4) for a few steps: steady step time, tokens/s, MFU against the
  peak matmul FLOP/s measured in that run, peak host memory against the plan's estimate (on CPU
  the 8 virtual devices share the host's memory, so the comparison is 8 x the per-device
  estimate plus what the interpreter and libraries hold, measured as the tiny model's run);
- compiled memory: `python -m runner.plan ... --compile` for the tiny model, gemma3_270m and
  gemma_2b_en (train.remat none and blocks): XLA's peak bytes per device for the real train step
  beside the estimate, and their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GB = 2**30
TRAIN = ["model.weights=random", "dataset=synthetic", "train.batch_size=8",
         "train.sequence_length=128", "tracking.mode=disabled", "generate.prompts=[]",
         "train.save_adapter=false"]
COMPILED = [
    ("tiny Gemma, default experiment", []),
    ("gemma3_270m, batch 8 x 128", ["model=gemma3_270m", "layout=gemma3_kv_replicated",
                                    "train.sequence_length=128"]),
    ("gemma_2b_en, batch 8 x 512", ["model=gemma_2b_en", "layout=gemma_kv_replicated",
                                    "train.sequence_length=512"]),
    ("gemma_2b_en, batch 8 x 512, remat=blocks", ["model=gemma_2b_en",
                                                  "layout=gemma_kv_replicated",
                                                  "train.sequence_length=512",
                                                  "train.remat=blocks"]),
]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("RUNNER_OFFLINE", "1")
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _run(args: list[str], cwd: Path, module: str = "runner") -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True)
    if proc.returncode not in (0, 2) or (module == "runner" and proc.returncode):
        raise RuntimeError(f"{module} {' '.join(args)} exited {proc.returncode}:\n"
                           f"{proc.stderr[-3000:]}")
    return proc


def train_row(model: str, steps: int, work: Path, *extra: str, name: str = "") -> dict:
    # not `model`: a folder of that name would be the preset
    run_dir = work / f"run-{model}{'-' + name if name else ''}"
    _run([f"model={model}", *extra, *TRAIN, f"train.steps={steps}", "train.log_every=2",
          f"hydra.run.dir={run_dir}"], work)
    return json.loads((run_dir / "summary.json").read_text())


def compiled_row(overrides: list[str], work: Path) -> dict:
    out = work / "plan.json"
    proc = _run(["--compile", "--json", str(out), "plan.accelerator=h100-80gb", *overrides],
                work, module="runner.plan")
    plan = json.loads(out.read_text())
    if "compiled" not in plan:
        raise RuntimeError(f"runner.plan {' '.join(overrides)} did not compile:\n{proc.stdout}")
    return plan


def render(summary: dict, base: dict, compiled: list[tuple[str, dict]], steps: int) -> str:
    est = summary["memory_per_device_estimate"]["total"]
    same = compiled[1][1]["compiled"]  # gemma3_270m's compiled step, as trained above
    overhead = base["peak_host_rss_bytes"]
    lines = [f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} CPU "
             f"cores, 8 virtual CPU devices. Command: `python benchmarks/scale.py`", "",
             "| measure | value | |", "|---|---:|---|",
             f"| gemma3_270m, random weights, LoRA 4, batch 8 x 128, mesh 2 x 4: step time | "
             f"{summary['step_time_s']:.2f} s | {summary['tokens_per_s']:,.0f} tokens/s, MFU "
             f"{summary['mfu']:.1%} (of {summary['peak_flops'] / 1e9:.0f} GFLOP/s measured); "
             f"{steps} steps, steady after the first 2 |",
             f"| same: peak host memory | {summary['peak_host_rss_bytes'] / GB:.2f} GB | "
             f"estimate: 8 devices x {est / GB:.2f} GB + {overhead / GB:.2f} GB (what the tiny "
             f"model's run holds: interpreter, libraries) = {(8 * est + overhead) / GB:.2f} GB;"
             f" compiled (below): 8 x {same['peak'] / GB:.2f} GB + {overhead / GB:.2f} GB = "
             f"{(8 * same['peak'] + overhead) / GB:.2f} GB |"]
    for name, plan in compiled:
        estimate, c = plan["memory_per_device"]["total"], plan["compiled"]
        lines.append(f"| compiled train step per device: {name} | {c['peak'] / GB:.3f} GB | "
                     f"estimate {estimate / GB:.3f} GB, estimate / compiled "
                     f"{estimate / c['peak']:.2f}; temporaries {c['temporaries'] / GB:.3f} GB; "
                     f"compiled in {c['seconds']:.0f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/scale.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "SCALE.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        work = Path(tmp)
        base = train_row("tiny_gemma", args.steps, work)
        # one kv head: it cannot be split over the model axis, so the layout replicates k/v
        summary = train_row("gemma3_270m", args.steps, work, "layout=gemma3_kv_replicated")
        compiled = [(name, compiled_row(overrides, work)) for name, overrides in COMPILED]
    text = render(summary, base, compiled, args.steps)
    print(text)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The runner against hand-written code, and against the hardware: one command, one table.

    python benchmarks/run.py                 # prints the table, writes benchmarks/RESULTS.md
    python benchmarks/run.py --steps 400     # longer steady state

Everything runs side by side in this one invocation, on this machine, one process at a time:
- training speed of `python -m runner` (the default experiment) against the same training
  written by hand in Keras (benchmarks/handwritten_keras.py) and as a pure JAX + optax step
  (benchmarks/handwritten_jax.py): mean step time over the steps after warm-up, tokens/s, the
  ratio to the runner, and model FLOPs utilisation against the peak matmul FLOP/s measured here;
- cold start: seconds from the command to the first training step, and for the config-only
  commands (`--cfg job`, `--help`) and `runner.plan`;
- an in-process sweep: wall time per job, with and without JAX's persistent compilation cache;
- the input pipeline: examples/s tf.data delivers alone, against what training consumes;
- peak resident memory of the default run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 20  # steps left out of steady state (compilation, caches)
LOG_EVERY = 10  # the runner logs (and so syncs with the device) every step regardless


def _env() -> dict:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float, str, float]:
    """(wall s, peak RSS GB, stdout, start time) with the child's own peak RSS (os.wait4)."""
    out_file = tempfile.TemporaryFile(mode="w+")
    start_wall = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=out_file,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}")
    out_file.seek(0)
    return wall, usage.ru_maxrss / 2**20, out_file.read(), start_wall


def steady(ends: list[float], steps: int) -> float:
    """Mean seconds per step after the warm-up steps."""
    return (ends[steps - 1] - ends[WARMUP - 1]) / (steps - WARMUP)


def runner_training(work: Path, steps: int) -> dict:
    run_dir = work / "runner"
    wall, peak, _, started = run_measured(
        [sys.executable, "-m", "runner", f"train.steps={steps}", f"train.log_every={LOG_EVERY}",
         "generate.prompts=[]", "train.save_adapter=false", "tracking.mode=disabled",
         f"hydra.run.dir={run_dir}"], work)
    timing = [json.loads(x) for x in (run_dir / "throughput.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    steady_rows = [t for t in timing if t["step"] - LOG_EVERY >= WARMUP]
    step_time = sum(t["step_time_s"] for t in steady_rows) / len(steady_rows)
    return {"step_s": step_time, "wall_s": wall, "peak_rss_gb": peak,
            "first_step_s": summary["first_step_at"] - started,
            "flops_per_step": summary["flops_per_step"], "peak_flops": summary["peak_flops"],
            "tokens_per_step": summary["tokens_per_step"]}


def handwritten(script: str, work: Path, steps: int) -> dict:
    _, _, out, _ = run_measured([sys.executable, str(ROOT / "benchmarks" / script),
                                 "--steps", str(steps)], work)
    result = json.loads(out.strip().splitlines()[-1])
    return {"step_s": steady(result["step_ends"], steps)}


def cold_starts(work: Path) -> dict:
    commands = {
        "`python -m runner --cfg job`": [sys.executable, "-m", "runner", "--cfg", "job"],
        "`python -m runner --help`": [sys.executable, "-m", "runner", "--help"],
        "`python -m runner.plan`": [sys.executable, "-m", "runner.plan"],
    }
    return {name: run_measured(cmd, work)[0] for name, cmd in commands.items()}


def sweep(work: Path, jobs: int, cache_dir: str | None) -> list[float]:
    """Wall seconds of each job of an in-process sweep (from its own summary)."""
    folder = work / ("sweep-cache" if cache_dir else "sweep")
    ranks = ",".join(str(r) for r in range(2, 2 + jobs))
    extra = [f"compilation_cache_dir={cache_dir}"] if cache_dir else []
    run_measured([sys.executable, "-m", "runner", "-m", f"lora.rank={ranks}", "train.steps=20",
                  "generate.prompts=[]", "train.save_adapter=false", "tracking.mode=disabled",
                  *extra, f"hydra.sweep.dir={folder}"], work)
    return [json.loads((folder / str(i) / "summary.json").read_text())["wall_time_s"]
            for i in range(jobs)]


def pipeline(work: Path, steps: int) -> float:
    """Examples/s the training stream delivers with nothing consuming it but a loop."""
    code = f"""
import os, sys, time, json
os.environ['KERAS_BACKEND'] = 'jax'
sys.path.insert(0, {str(ROOT / 'tests')!r})
from conftest import compose
from runner import data, model
cfg = compose()
import keras_hub
pre = keras_hub.models.CausalLMPreprocessor.from_preset(model.resolve_preset(cfg.model.preset))
pre.sequence_length = cfg.train.sequence_length
stream = data.build(cfg.dataset, pre, 8, 64, 100, {steps}, 0)
it = iter(stream.dataset)
for _ in range(20): next(it)
start = time.perf_counter(); n = 0
for _ in it: n += 8
print(json.dumps({{"examples_per_s": n / (time.perf_counter() - start)}}))
"""
    _, _, out, _ = run_measured([sys.executable, "-c", code], work)
    return json.loads(out.strip().splitlines()[-1])["examples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    os.environ.setdefault("TFDS_DATA_DIR", str(work / "tfds"))
    os.environ.setdefault("KERAS_HOME", str(work / "keras"))

    runner = runner_training(work, args.steps)
    keras = handwritten("handwritten_keras.py", work, args.steps)
    jax_ = handwritten("handwritten_jax.py", work, args.steps)
    starts = cold_starts(work)
    no_cache = sweep(work, args.jobs, None)
    cache = str(work / "jax-cache")
    sweep(work, args.jobs, cache)  # fills the cache
    with_cache = sweep(work, args.jobs, cache)
    examples_per_s = pipeline(work, args.steps)

    tokens = runner["tokens_per_step"]
    peak = runner["peak_flops"]

    def mfu(step_s):
        return runner["flops_per_step"] / step_s / peak

    rows = ["| measure | value | |", "|---|---:|---|"]
    for name, result in (("runner (`python -m runner`)", runner),
                         ("hand-written Keras", keras), ("hand-written JAX + optax", jax_)):
        rows.append(f"| {name}: step time | {1000 * result['step_s']:.1f} ms | "
                    f"{tokens / result['step_s']:,.0f} tokens/s, MFU {100 * mfu(result['step_s']):.1f}%, "
                    f"runner / this = {runner['step_s'] / result['step_s']:.3f} |")
    rows.append(f"| peak matmul (measured, all devices) | {peak / 1e9:.1f} GFLOP/s | "
                f"model FLOPs/step {runner['flops_per_step'] / 1e9:.2f} G |")
    rows.append(f"| cold start: command to first training step | {runner['first_step_s']:.1f} s | "
                "imports, config, plan, build, data, compile |")
    for name, seconds in starts.items():
        rows.append(f"| cold start: {name} | {seconds:.1f} s | |")
    rows.append(f"| in-process sweep of {args.jobs} jobs (20 steps), no compilation cache | "
                f"{sum(no_cache):.1f} s | per job: {', '.join(f'{s:.1f}' for s in no_cache)} s |")
    rows.append(f"| same, persistent compilation cache warm | {sum(with_cache):.1f} s | "
                f"per job: {', '.join(f'{s:.1f}' for s in with_cache)} s |")
    consumed = 8 / runner["step_s"]
    rows.append(f"| input pipeline alone | {examples_per_s:,.0f} examples/s | training consumes "
                f"{consumed:,.0f}/s: {examples_per_s / consumed:.0f}x headroom |")
    rows.append(f"| peak RSS of the default run ({args.steps} steps) | "
                f"{runner['peak_rss_gb']:.2f} GB | |")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python "
               f"{platform.python_version()}, 8 virtual CPU devices (mesh 2 x 4)")
    table = "\n".join(rows)
    text = (f"Measured {time.strftime('%Y-%m-%d')} on {machine}; default experiment (tiny Gemma, "
            f"LoRA rank 4, batch 8 x 64), {args.steps} steps, steady state after step {WARMUP}.\n"
            f"Command: `python benchmarks/run.py --steps {args.steps}`\n\n{table}\n")
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

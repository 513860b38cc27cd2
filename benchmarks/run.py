"""The runner against hand-written code, and against the hardware: one command, one table.

    python benchmarks/run.py                       # prints the table, writes benchmarks/RESULTS.md
    python benchmarks/run.py --rounds 9 --steps 200  # tighter figures, longer

Everything runs side by side in this one invocation, on this machine, one process at a time:
- training speed of `python -m runner` (the default experiment) against the same training
  written by hand in Keras (benchmarks/handwritten_keras.py) and as a pure JAX + optax step
  (benchmarks/handwritten_jax.py), in `--rounds` rounds whose order rotates. A run's step time
  is the median of its 10-step intervals after warm-up; a program's figure is the median over
  the rounds; a ratio is the median of the rounds' ratios (each round's runs are minutes apart,
  so a slow spell of a shared machine hits both sides of a ratio alike). With tokens/s and
  model FLOPs utilisation against the peak matmul FLOP/s measured here;
- the compiled train step of each (XLA's optimised HLO, dumped from a short run of each):
  instructions, collectives, cross-entropy passes, buffer bytes, and how many times it compiled.
  It does not depend on the machine's noise: it says whether the runner asks the devices to do
  more than hand-written code does;
- the default run exactly as README line one starts it (`python -m runner`): wall time,
  seconds from the command to the first training step, peak resident memory;
- cold start of the config-only commands (`--cfg job`, `--help`) and `runner.plan`;
- an in-process sweep: wall time per job, with and without JAX's persistent compilation cache;
- the input pipeline: examples/s tf.data delivers alone, against what training consumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 20  # steps left out of steady state (compilation, caches)
LOG_EVERY = 10  # the runner's logging interval, and the interval all three are timed over
# The runner's flags for the training loop alone (no samples, adapter or W&B), as the
# hand-written scripts do.
RUNNER_TRAINING_ONLY = ["generate.prompts=[]", "train.save_adapter=false",
                        "tracking.mode=disabled"]
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def _env(xla_flags: str = "") -> dict:
    env = dict(os.environ)
    if xla_flags:  # the device count too: the baselines only set XLA_FLAGS when it is unset
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count=8 {xla_flags}"
    env.pop("HYDRA_FULL_ERROR", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_measured(cmd: list[str], cwd: Path, xla_flags: str = "") -> tuple[float, float, str, float]:
    """(wall s, peak RSS GB, stdout, start time) with the child's own peak RSS (os.wait4)."""
    out_file = tempfile.TemporaryFile(mode="w+")
    start_wall = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(xla_flags), stdout=out_file,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}")
    out_file.seek(0)
    return wall, usage.ru_maxrss / 2**20, out_file.read(), start_wall


def intervals(ends: list[float], steps: int) -> list[float]:
    """Mean step time of each LOG_EVERY-step interval after the warm-up, from the wall-clock
    end of every step (the intervals the runner logs in throughput.jsonl)."""
    return [(ends[i + LOG_EVERY - 1] - ends[i - 1]) / LOG_EVERY
            for i in range(WARMUP, steps - LOG_EVERY + 1, LOG_EVERY)]


def _fresh(work: Path, prefix: str) -> Path:
    """A new path under work: a run folder holding a finished run of the same config is left
    alone by the runner, and a dump folder must hold one run's modules only."""
    return work / f"{prefix}-{len(list(work.glob(f'{prefix}-*')))}"


def _script(name: str):
    return lambda steps, run_dir: [sys.executable, str(ROOT / "benchmarks" / name),
                                   "--steps", str(steps)]


PROGRAMS = {  # name in the table -> its command for N steps into a run folder
    "runner (`python -m runner`)": lambda steps, run_dir: [
        sys.executable, "-m", "runner", f"train.steps={steps}", f"train.log_every={LOG_EVERY}",
        *RUNNER_TRAINING_ONLY, f"hydra.run.dir={run_dir}"],
    "hand-written Keras": _script("handwritten_keras.py"),
    "hand-written JAX + optax": _script("handwritten_jax.py"),
}


def timed_intervals(work: Path, name: str, steps: int) -> list[float]:
    """The program's step-time intervals after warm-up: the runner logs them in
    throughput.jsonl; the hand-written scripts print every step's end."""
    run_dir = _fresh(work, "run")
    _, _, out, _ = run_measured(PROGRAMS[name](steps, run_dir), work)
    throughput = run_dir / "throughput.jsonl"
    if throughput.exists():
        timing = [json.loads(x) for x in throughput.read_text().splitlines()]
        return [t["step_time_s"] for t in timing if t["step"] - LOG_EVERY >= WARMUP]
    return intervals(json.loads(out.strip().splitlines()[-1])["step_ends"], steps)


def training_rounds(work: Path, steps: int, rounds: int) -> dict[str, list[float]]:
    """Each program's step time (median of its intervals) in every round; the order rotates
    from round to round so that no program always runs first or last."""
    names = list(PROGRAMS)
    results = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(statistics.median(timed_intervals(work, name, steps)))
            print(f"round {r + 1}/{rounds}: {name} {1000 * results[name][-1]:.1f} ms/step",
                  file=sys.stderr, flush=True)
    return results


def compiled_step(work: Path, name: str) -> dict:
    """XLA's optimised HLO of the program's train step (a 3-step run with the module dumped)."""
    dump = _fresh(work, "hlo")
    run_measured(PROGRAMS[name](3, _fresh(work, "run")), work,
                 f"--xla_dump_to={dump} --xla_dump_hlo_module_re=.*train_step.*")
    modules = sorted(dump.glob("*train_step*_after_optimizations.txt"))
    if not modules:
        raise RuntimeError(f"no train step HLO was dumped for {name} in {dump}")
    hlo = modules[-1].read_text()
    ops = re.findall(r"^\s*(?:ROOT )?%\S+ = .*? ([a-z][a-z0-9-]*)\(", hlo, re.MULTILINE)
    report = Path(str(modules[-1]).replace(".txt", "-memory-usage-report.txt"))
    total = re.search(r"Total bytes: (\d+)", report.read_text()) if report.exists() else None
    return {"instructions": len(ops),
            "collectives": sum(op.removesuffix("-start") in COLLECTIVES for op in ops),
            "cross_entropy": ops.count("log"),  # one log per log-softmax over the vocabulary
            "vocabulary_reductions": vocabulary_reductions(hlo, tiny_vocabulary()),
            "buffer_bytes": int(total.group(1)) if total else 0,
            "compilations": len(modules)}


def tiny_vocabulary() -> int:
    config = ROOT / "runner" / "assets" / "presets" / "tiny_gemma" / "config.json"
    return json.loads(config.read_text())["config"]["vocabulary_size"]


def vocabulary_reductions(hlo: str, vocabulary: int) -> int:
    """reduce instructions over a vocabulary-sized axis (a max, a sum of exponentials, an
    argmax): what a pass over the logits costs, fused or not."""
    found = 0
    for line in hlo.splitlines():
        match = re.search(r" reduce\((?:\w+)\[([\d,]*)\].*?dimensions=\{([\d,]+)\}", line)
        if match:
            shape = [int(d) for d in match.group(1).split(",") if d]
            axes = [int(a) for a in match.group(2).split(",")]
            found += any(shape[a] == vocabulary for a in axes if a < len(shape))
    return found


def default_run(work: Path) -> dict:
    """README line one's command, unchanged, in an empty folder."""
    folder = work / "default"
    folder.mkdir()
    wall, peak, _, started = run_measured([sys.executable, "-m", "runner"], folder)
    summary = json.loads(next(folder.glob("outputs/*/*/summary.json")).read_text())
    return {"wall_s": wall, "peak_rss_gb": peak, "first_step_s": summary["first_step_at"] - started,
            "steps": summary["steps"], "first_loss": summary["first_loss"],
            "final_loss": summary["final_loss"], "flops_per_step": summary["flops_per_step"],
            "peak_flops": summary["peak_flops"], "tokens_per_step": summary["tokens_per_step"]}


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
                  *RUNNER_TRAINING_ONLY, *extra, f"hydra.sweep.dir={folder}"], work)
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
    parser.add_argument("--steps", type=int, default=120, help="training steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs of each program")
    parser.add_argument("--jobs", type=int, default=4, help="jobs of the timed sweep")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    args = parser.parse_args()
    if args.steps < WARMUP + 2 * LOG_EVERY:
        parser.error(f"--steps must be at least {WARMUP + 2 * LOG_EVERY}")
    work = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    os.environ.setdefault("TFDS_DATA_DIR", str(work / "tfds"))
    os.environ.setdefault("KERAS_HOME", str(work / "keras"))

    default = default_run(work)
    rounds = training_rounds(work, args.steps, args.rounds)
    compiled = {name: compiled_step(work, name) for name in PROGRAMS}
    starts = cold_starts(work)
    no_cache = sweep(work, args.jobs, None)
    cache = str(work / "jax-cache")
    sweep(work, args.jobs, cache)  # fills the cache
    with_cache = sweep(work, args.jobs, cache)
    examples_per_s = pipeline(work, args.steps)

    runner = next(iter(PROGRAMS))
    step_s = {name: statistics.median(times) for name, times in rounds.items()}
    tokens, peak, flops = default["tokens_per_step"], default["peak_flops"], default["flops_per_step"]
    rows = ["| measure | value | |", "|---|---:|---|"]
    for name, times in rounds.items():
        note = (f"{tokens / step_s[name]:,.0f} tokens/s, MFU {100 * flops / step_s[name] / peak:.1f}%; "
                f"rounds: {', '.join(f'{1000 * t:.0f}' for t in times)} ms")
        if name != runner:
            ratios = [a / b for a, b in zip(rounds[runner], rounds[name])]
            note += (f"; **runner / this = {statistics.median(ratios):.2f}** (rounds "
                     f"{min(ratios):.2f} to {max(ratios):.2f})")
        rows.append(f"| {name}: step time | {1000 * step_s[name]:.1f} ms | {note} |")
    base = compiled[runner]
    for name, c in compiled.items():
        note = ""
        if name != runner:
            note = (f"runner adds {base['instructions'] - c['instructions']:+d} instructions, "
                    f"{base['collectives'] - c['collectives']:+d} collectives, "
                    f"{base['cross_entropy'] - c['cross_entropy']:+d} cross-entropy, "
                    f"{base['vocabulary_reductions'] - c['vocabulary_reductions']:+d} "
                    "vocabulary-sized reductions")
        rows.append(f"| compiled train step: {name.split(' (')[0]} | "
                    f"{c['instructions']:,} HLO instructions | {c['collectives']} collectives, "
                    f"{c['cross_entropy']} cross-entropy pass(es), "
                    f"{c['vocabulary_reductions']} vocabulary-sized reductions, "
                    f"{c['buffer_bytes'] / 2**20:.2f} MiB buffers, compiled "
                    f"{c['compilations']}x{'; ' + note if note else ''} |")
    rows.append(f"| peak matmul (measured, all devices) | {peak / 1e9:.1f} GFLOP/s | "
                f"model FLOPs/step {flops / 1e9:.2f} G |")
    rows.append(f"| default run, `python -m runner` as README line one | {default['wall_s']:.1f} s | "
                f"{default['steps']} steps, token loss {default['first_loss']:.2f} -> "
                f"{default['final_loss']:.2f}, samples, adapter, W&B offline run |")
    rows.append(f"| cold start: command to first training step | {default['first_step_s']:.1f} s | "
                "imports, config, plan, build, data, compile |")
    for name, seconds in starts.items():
        rows.append(f"| cold start: {name} | {seconds:.1f} s | |")
    rows.append(f"| in-process sweep of {args.jobs} jobs (20 steps), no compilation cache | "
                f"{sum(no_cache):.1f} s | per job: {', '.join(f'{s:.1f}' for s in no_cache)} s |")
    rows.append(f"| same, persistent compilation cache warm | {sum(with_cache):.1f} s | "
                f"per job: {', '.join(f'{s:.1f}' for s in with_cache)} s |")
    consumed = 8 / step_s[runner]
    rows.append(f"| input pipeline alone | {examples_per_s:,.0f} examples/s | training consumes "
                f"{consumed:,.0f}/s: {examples_per_s / consumed:.0f}x headroom |")
    rows.append(f"| peak RSS of the default run | {default['peak_rss_gb']:.2f} GB | |")
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python "
               f"{platform.python_version()}, 8 virtual CPU devices (mesh 2 x 4)")
    command = "python benchmarks/run.py" + "".join(
        f" --{k} {v}" for k, v in (("rounds", args.rounds), ("steps", args.steps), ("jobs", args.jobs))
        if v != parser.get_default(k))
    text = (f"Measured {time.strftime('%Y-%m-%d')} on {machine}; default experiment (tiny Gemma, "
            f"LoRA rank 4, batch 8 x 64); {args.rounds} rounds of {args.steps} steps per program, "
            f"steady state after step {WARMUP}.\nCommand: `{command}`\n\n"
            + "\n".join(rows) + "\n")
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

"""Real architectures on an accelerator, in one command: the runner against hand-written Keras
and a pure JAX + optax step, on the same model, batch and synthetic tokens.

    python benchmarks/gpu.py                          # Gemma 2B and 7B, bf16, LoRA 4, 1 x 2048
    python benchmarks/gpu.py --models gemma_7b_en --batch 2 --length 4096
    python benchmarks/gpu.py --tiny                   # the shipped tiny Gemma on CPU: the code path

Each (model, program) pair runs in its own process, one after another, so each peak memory is
its own, and on the same one device (the first GPU, or one CPU device: the runner gets
cpu_devices=1 and every process CUDA_VISIBLE_DEVICES=0), so a ratio measures the program, not
the device count: architecture from conf/model/<model>.yaml with random weights (seeded), bfloat16 weights
and compute, LoRA on the family's default layers, every device on the batch axis, synthetic
token ids (no dataset, no TensorFlow, no W&B: the machines this is for have none of them).
- runner: `python -m runner model=M model.weights=random dataset=synthetic ...` as a user runs it;
  its summary.json gives the steady step time and the peak device memory;
- keras: the same model built and fitted by hand with keras-hub (benchmarks/gpu_programs.py);
- jax: the same model's stateless_call in one jitted, donated optax step.
Step time is the mean over the steps after `--warmup`; tokens/s = batch x length / step time;
MFU = model FLOPs per step (runner/flops.py: 6 per trainable, 4 per frozen weight per token, plus
attention) / step time / the device's dense bf16 peak (the table below; on CPU, the measured
float32 matmul peak). Prints a Markdown table, and writes it with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ("runner", "keras", "jax")
# Dense bfloat16 peak FLOP/s by jax's device_kind (vendors' data sheets, SXM parts).
BF16_PEAK = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
             "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12,
             "NVIDIA L4": 121e12, "TPU v5p": 459e12, "TPU v5 lite": 197e12, "TPU v6 lite": 918e12}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma_2b_en,gemma_7b_en",
                        help="conf/model file names, comma separated")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--tiny", action="store_true",
                        help="the shipped tiny Gemma, 8 x 64 tokens, 12 steps, float32, on CPU")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.models, args.batch, args.length, args.steps, args.warmup = "tiny_gemma", 8, 64, 12, 4
        args.precision = "float32"
    return args


def runner_overrides(model: str, args, run_dir: Path) -> list[str]:
    return [f"model={model}", "model.weights=random", "dataset=synthetic",
            f"lora.rank={args.rank}", "mesh=data_parallel", f"train.precision={args.precision}",
            f"train.batch_size={args.batch}", f"train.sequence_length={args.length}",
            f"train.steps={args.steps}", f"train.log_every={args.warmup}",
            "tracking.mode=disabled", "generate.prompts=[]", "train.save_adapter=false",
            f"hydra.run.dir={run_dir}"]


def _env(args) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("RUNNER_OFFLINE", "1")  # nothing on these machines reaches a network
    if args.tiny:
        env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("CUDA_VISIBLE_DEVICES", "0")  # every program on the same one device
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_program(program: str, model: str, args, work: Path) -> dict:
    """One program on one model, in its own process: step time, peak memory, FLOPs."""
    if program == "runner":
        run_dir = work / f"{model}-runner"
        cmd = [sys.executable, "-m", "runner", *runner_overrides(model, args, run_dir)]
        cmd.append("cpu_devices=1")  # one device, as the baselines use
    else:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_programs.py"), program, model,
               "--batch", str(args.batch), "--length", str(args.length), "--rank",
               str(args.rank), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--precision", args.precision]
    proc = subprocess.run(cmd, cwd=work, env=_env(args), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{program} on {model} exited {proc.returncode}:\n"
                           f"{proc.stderr[-3000:]}")
    if program == "runner":
        summary = json.loads((run_dir / "summary.json").read_text())
        return {"step_time_s": summary["step_time_s"], "flops_per_step": summary["flops_per_step"],
                "peak_device_bytes": summary["peak_device_bytes"],
                "peak_host_rss_bytes": summary["peak_host_rss_bytes"],
                "device_kind": json.loads((run_dir / "env.json").read_text())["device_kind"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_flops(device_kind: str) -> tuple[float, str]:
    for name, peak in BF16_PEAK.items():
        if device_kind.startswith(name):
            return peak, f"{device_kind} dense bf16 {peak / 1e12:.0f} TFLOP/s"
    sys.path.insert(0, str(ROOT))
    from runner.flops import peak_matmul_flops

    measured = peak_matmul_flops()
    return measured, f"{device_kind}: float32 matmul measured, {measured / 1e9:.1f} GFLOP/s"


def table(rows: list[dict], args, peak_text: str) -> str:
    lines = [f"Batch {args.batch} x {args.length} tokens, LoRA rank {args.rank}, "
             f"{args.precision}, random weights, synthetic tokens; {args.steps} steps, steady "
             f"state after step {args.warmup}. MFU against {peak_text}.", "",
             "| model | program | step time | tokens/s | MFU | peak memory | vs keras |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['program']} | {r['step_time_s'] * 1e3:,.1f} ms | "
                     f"{r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['peak_text']} | "
                     f"{r['vs_keras']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows, peak_text = [], ""
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        for model in args.models.split(","):
            results = {p: run_program(p, model, args, Path(tmp))
                       for p in args.programs.split(",")}
            peak, peak_text = peak_flops(next(iter(results.values()))["device_kind"])
            flops = results.get("runner", next(iter(results.values())))["flops_per_step"]
            for program, r in results.items():
                tokens_per_s = args.batch * args.length / r["step_time_s"]
                device, host = r.get("peak_device_bytes"), r.get("peak_host_rss_bytes")
                ratio = results["keras"]["step_time_s"] / r["step_time_s"] \
                    if "keras" in results else None
                rows.append({"model": model, "program": program, **r,
                             "tokens_per_s": tokens_per_s, "mfu": flops / r["step_time_s"] / peak,
                             "peak_text": f"{device / 2**30:.2f} GB device" if device else
                             f"{host / 2**30:.2f} GB host RSS",
                             "vs_keras": f"{ratio:.2f}x" if ratio else "-"})
    text = table(rows, args, peak_text)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Packed against unpacked rows on the shipped data, in one command: useful (non-padding)
tokens per second of `python -m runner` with dataset.packing=false and true.

    python benchmarks/packing.py                 # tiny_chats and tiny_reviews, 40 steps each
    python benchmarks/packing.py --steps 100

Each run is the tiny model on one CPU device with the same batch and sequence length; a row's
step time does not depend on what fills it, so what packing buys is the share of the slots that
hold tokens (summary.json's data.<split>.filled, counted over the whole split) times the rows
per second. Prints a Markdown table.
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
DATA = {"tiny_chats": ["experiment=gemma_instruct_chat", "debug=smoke"],
        "tiny_reviews": ["dataset=tiny_reviews"]}


def run(dataset: str, packing: bool, args, work: Path) -> dict:
    folder = work / f"{dataset}-{packing}"
    cmd = [sys.executable, "-m", "runner", *DATA[dataset], f"dataset.packing={packing}",
           f"train.steps={args.steps}", f"train.batch_size={args.batch}",
           f"train.sequence_length={args.length}", f"train.log_every={args.warmup}",
           "train.eval_every=null", "dataset.eval_split=null", "generate.prompts=[]",
           "train.save_adapter=false", "tracking.mode=disabled", "cpu_devices=1",
           "mesh=data_parallel", f"hydra.run.dir={folder}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    summary = json.loads((folder / "summary.json").read_text())
    split = next(iter(summary["data"].values()))
    slots = args.batch * args.length
    return {"step_time_s": summary["step_time_s"], "filled": split["filled"],
            "rows": split.get("rows") or split["kept"],
            "useful_per_s": split["filled"] * slots / summary["step_time_s"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    args = parser.parse_args(argv)
    lines = [f"Tiny Gemma, LoRA rank 4, batch {args.batch} x {args.length} tokens, one CPU "
             f"device, {args.steps} steps (steady after {args.warmup}).", "",
             "| data | packing | rows per epoch | slots holding tokens | step time | useful "
             "tokens/s | packed / unpacked |", "|---|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="packing-bench-") as tmp:
        for dataset in DATA:
            results = {p: run(dataset, p, args, Path(tmp)) for p in (False, True)}
            for packing, r in results.items():
                ratio = r["useful_per_s"] / results[False]["useful_per_s"]
                lines.append(f"| {dataset} | {'on' if packing else 'off'} | {r['rows']:,} | "
                             f"{r['filled']:.1%} | {r['step_time_s'] * 1e3:.1f} ms | "
                             f"{r['useful_per_s']:,.0f} | {ratio:.2f}x |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

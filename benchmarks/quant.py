"""What quantizing the frozen base buys and costs, in one command: the plan's and XLA's memory
per device for gemma_7b_en's LoRA train step under quant=none / int8 / int4 / nf4, and the step time
of gemma3_270m on the 8 virtual CPU devices with and without an NF4 base.

    python benchmarks/quant.py          # prints the table, writes benchmarks/QUANT.md
    python benchmarks/quant.py --only int4 --only "int4, mesh 1 x 8"   # those memory rows,
                                        # printed only

Rows:
- memory: `python -m runner.plan model=gemma_7b_en ... --compile` with LoRA rank 16 on query,
  key, value and output (qlora_prompts' targets), bfloat16, batch 8 x 512, the weights whole on
  every device (mesh=data_parallel: the base's full size per device, so the modes compare
  directly), and nf4 and int4 again on a 1 x 8 mesh (the base split over the model axis);
- step time: `python -m runner model=gemma3_270m model.weights=random dataset=synthetic` (LoRA
  rank 4, batch 8 x 128, mesh 2 x 4, bfloat16) with quant=none and quant=nf4: what dequantizing
  every linear layer in every step costs on this CPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

from scale import GB, compiled_row, train_row

ROOT = Path(__file__).resolve().parent.parent
MEMORY = ["model=gemma_7b_en", "lora=rank16", "lora.targets=[query,key,value,attention_output]",
          "train.precision=bfloat16", "train.batch_size=8", "train.sequence_length=512"]
MEMORY_ROWS = [("none", ["quant=none", "mesh=data_parallel"]),
               ("int8", ["quant=int8", "mesh=data_parallel"]),
               ("int4", ["quant=int4", "mesh=data_parallel"]),
               ("nf4", ["quant=nf4", "mesh=data_parallel"]),
               ("int4, mesh 1 x 8", ["quant=int4", "mesh=1x8"]),
               ("nf4, mesh 1 x 8", ["quant=nf4", "mesh=1x8"])]


def _base_bytes(plan: dict) -> int:
    """The frozen weights per device the plan lists (the quantized base and its statistics,
    the embedding and norms)."""
    return plan["memory_per_device"]["frozen_weights"]


def memory_table(memory: list) -> list:
    lines = ["| quant | frozen weights (plan) | step total (plan) | compiled peak (XLA:CPU) | "
             "compiled in |", "|---|---:|---:|---:|---:|"]
    for name, plan in memory:
        c = plan["compiled"]
        lines.append(f"| {name} | {_base_bytes(plan) / GB:.2f} GB | "
                     f"{plan['memory_per_device']['total'] / GB:.2f} GB | "
                     f"{c['peak'] / GB:.2f} GB | {c['seconds']:.0f} s |")
    return lines


def render(memory: list, steps: dict, n_steps: int) -> str:
    lines = [f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} CPU "
             f"cores, 8 virtual CPU devices. Command: `python benchmarks/quant.py`", "",
             "gemma_7b_en, LoRA 16 on query/key/value/output, bfloat16, batch 8 x 512, per "
             "device:", "", *memory_table(memory)]
    if not steps:
        return "\n".join(lines)
    none, nf4 = steps["none"], steps["nf4"]
    lines += ["", "gemma3_270m, random weights, LoRA 4, batch 8 x 128, mesh 2 x 4, bfloat16, "
              f"{n_steps} steps (steady after the first 2):", "",
              "| quant | step time | tokens/s |", "|---|---:|---:|"]
    for name, summary in (("none", none), ("nf4", nf4)):
        lines.append(f"| {name} | {summary['step_time_s']:.2f} s | "
                     f"{summary['tokens_per_s']:,.0f} |")
    lines.append(f"| nf4 / none | {nf4['step_time_s'] / none['step_time_s']:.2f}x | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/quant.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "QUANT.md")
    parser.add_argument("--only", action="append", choices=[name for name, _ in MEMORY_ROWS],
                        help="measure only this memory row (repeatable); prints, writes nothing")
    args = parser.parse_args(argv)
    if args.only:
        with tempfile.TemporaryDirectory(prefix="quant-") as tmp:
            memory = [(name, compiled_row([*MEMORY, *extra], Path(tmp)))
                      for name, extra in MEMORY_ROWS if name in args.only]
        print(render(memory, {}, 0))
        return 0
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp:
        work = Path(tmp)
        steps = {quant: train_row("gemma3_270m", args.steps, work, f"quant={quant}",
                                  "layout=gemma3_kv_replicated", "train.precision=bfloat16",
                                  name=quant)
                 for quant in ("none", "nf4")}
        memory = [(name, compiled_row([*MEMORY, *extra], work)) for name, extra in MEMORY_ROWS]
    text = render(memory, steps, args.steps)
    print(text)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

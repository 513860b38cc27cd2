"""The plan's memory estimate against the TPU compiler's figure, over a grid, in one command:

    python benchmarks/calibrate.py                       # the full grid on tpu-v5p (about 1 h)
    python benchmarks/calibrate.py --models llama3.2_1b --lengths 512 --out table.md

For every point (model x sequence length x remat x precision x LoRA or full fine-tune x mesh),
`runner.plan`'s estimate (runner/plan/memory.py) and the peak per device of the run's own train
step compiled by libtpu for the accelerator's slice (runner/plan/compiled.py, no TPU needed:
`pip install -e ".[tpu-plan]"`), and their ratio. One process, the points one after another
(Keras' session cleared between them); a point the compiler refuses is a row with its reason.
Prints a Markdown table, and writes it with --out; --json keeps every figure.

The ratio is estimate / (compiled peak - generated code): the program's code (0.19-0.55 GB per
device over the grid) is the one term the estimate leaves to the plan's headroom. The compiled
figures do not depend on the estimate, so `--rescore points.json` recomputes the estimates and
ratios of a saved --json grid in seconds, without compiling (how the estimate was calibrated).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GRID = {"models": "gemma_2b_en,llama3.2_1b,qwen2.5_0.5b_en", "lengths": "512,2048,8192",
        "remat": "none,blocks", "precision": "float32,bfloat16", "lora": "rank4,none",
        "meshes": "8x1,2x4"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/calibrate.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", default="tpu-v5p")
    for name, default in GRID.items():
        parser.add_argument(f"--{name}", default=default, help=f"comma separated ({default})")
    parser.add_argument("--batch", type=int, default=8, help="global batch (8)")
    parser.add_argument("--out", type=Path, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, help="every point's figures as JSON")
    parser.add_argument("--rescore", type=Path, action="append",
                        help="a --json file of compiled points: estimate them again, no compile")
    return parser.parse_args(argv)


def _planned(model, length, remat, precision, lora, mesh_shape, args):
    from runner.config import compose, validate
    from runner.plan.__main__ import plan_for

    rows, cols = (int(s) for s in mesh_shape.split("x"))
    overrides = [f"model={model}", f"lora={lora}", f"train.sequence_length={length}",
                 f"train.remat={remat}", f"train.precision={precision}",
                 f"train.batch_size={args.batch}", f"mesh.shape=[{rows},{cols}]",
                 f"plan.accelerator={args.accelerator}", "dataset=synthetic",
                 "model.weights=random", "train.steps=10"]
    cfg = compose(overrides, job_name="plan")
    validate(cfg)
    return cfg, plan_for(cfg)


def _ratio(row) -> float:
    return row["estimate"] / (row["compiled"] - row["code"])


def point(model, length, remat, precision, lora, mesh_shape, args) -> dict:
    import keras

    from runner.plan.compiled import compile_train_step

    row = {"model": model, "length": length, "remat": remat, "precision": precision,
           "lora": lora, "mesh": mesh_shape}
    keras.backend.clear_session()
    cfg, result = _planned(model, length, remat, precision, lora, mesh_shape, args)
    memory = result["memory"]
    row.update(estimate=memory.total, activations=memory.activations)
    others = [p for p in result["plan"].problems if p != result["fit"]]
    if others:
        return {**row, "error": others[0][:160]}
    started = time.time()
    try:
        compiled = compile_train_step(cfg, result["plan"], result["n_devices"],
                                      result["described"])
    except Exception as exc:  # the compiler's refusal is a finding, not a crash
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {**row, "error": first[:300], "seconds": time.time() - started}
    if compiled.refused:  # a lower bound, not a figure to calibrate against
        return {**row, "error": compiled.refused[:300], "seconds": compiled.seconds}
    row.update(compiled=compiled.peak, temporaries=compiled.temporaries,
               arguments=compiled.arguments, code=compiled.generated_code,
               seconds=compiled.seconds)
    return {**row, "ratio": _ratio(row)}


def rescore(row, args) -> dict:
    """A saved point with today's estimate (its compiled figures are the compiler's)."""
    _, result = _planned(row["model"], int(row["length"]), row["remat"], row["precision"],
                         row["lora"], row["mesh"], args)
    memory = result["memory"]
    row = {**row, "estimate": memory.total, "activations": memory.activations}
    return {**row, "ratio": _ratio(row)} if "compiled" in row else row


def table(rows: list[dict], args) -> str:
    gb = 2**30
    lines = [f"Estimate vs the TPU compiler ({args.accelerator}, {args.batch} sequences per step), "
             "GB per device:", "",
             "| model | tokens | remat | precision | LoRA | mesh | estimate | compiled | "
             "of it code | estimate / (compiled - code) |",
             "|---|---:|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        compiled = f"{r['compiled'] / gb:.2f}" if "compiled" in r else f"({r['error']})"
        code = f"{r['code'] / gb:.2f}" if "code" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        lines.append(f"| {r['model']} | {r['length']} | {r['remat']} | {r['precision']} | "
                     f"{r['lora']} | {r['mesh']} | {r['estimate'] / gb:.2f} | {compiled} | "
                     f"{code} | {ratio} |")
    ratios = [r["ratio"] for r in rows if "ratio" in r]
    if ratios:
        lines.append("")
        for mesh in sorted({r["mesh"] for r in rows if "ratio" in r}):
            these = [r["ratio"] for r in rows if "ratio" in r and r["mesh"] == mesh]
            inside = sum(0.85 <= x <= 1.15 for x in these)
            lines.append(f"mesh {mesh}: {inside} of {len(these)} points within 15%; "
                         f"estimate / (compiled - code) from {min(these):.2f} to "
                         f"{max(these):.2f}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from runner import startup

    startup.set_process_environment(8)
    startup.quiet_library_loggers()
    rows = []
    if args.rescore:
        for path in args.rescore:
            rows += [rescore(row, args) for row in json.loads(path.read_text())]
    else:
        grid = itertools.product(*(getattr(args, name).split(",") for name in GRID))
        for model, length, remat, precision, lora, mesh_shape in grid:
            row = point(model, int(length), remat, precision, lora, mesh_shape, args)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    text = table(rows, args)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

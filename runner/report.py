"""`python -m runner.report DIR`: one table for a run or a sweep folder, as text, CSV, Markdown
and a picture.

    python -m runner.report outputs/multirun/default/2026-11-23_15-02-11-123456

One row per job: the values the sweep varied (from each job's .hydra/overrides.yaml), status,
steps, final and best loss, final eval loss, tokens/s. Writes report.csv, report.md and
report.png into DIR: loss curves per job, and the final loss against each swept value.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from runner import startup
from runner.errors import UserError
from runner.rundir import RunDir, job_folders

METRIC_COLUMNS = ["status", "steps", "final_loss", "best_loss", "final_eval_loss",
                  "tokens_per_s", "error"]


def _overrides(job_dir: Path) -> dict[str, str]:
    pairs = (o.split("=", 1) for o in RunDir(job_dir).overrides() if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs}


def collect(folder: Path) -> tuple[list[str], list[dict]]:
    """(swept keys, one row per job) for a run or sweep folder."""
    jobs = job_folders(folder)
    if not jobs:
        raise UserError(f"{folder} holds no run (no summary.json below it): give a run or "
                        "sweep folder under outputs/")
    overrides = {d: _overrides(d) for d in jobs}
    keys = sorted({k for o in overrides.values() for k in o})
    swept = [k for k in keys if len({o.get(k) for o in overrides.values()}) > 1] \
        if len(jobs) > 1 else keys
    rows = []
    for job_dir, summary in jobs.items():
        rel = job_dir.relative_to(folder).as_posix() if job_dir != folder else "."
        row = {"job": rel, **{k: overrides[job_dir].get(k, "") for k in swept}}
        row.update({c: summary.get(c, "") for c in METRIC_COLUMNS})
        row["status"] = summary.get("status", "unknown")
        row["_dir"] = job_dir
        rows.append(row)
    return swept, rows


def _cell(value) -> str:
    if isinstance(value, str) and len(value) > 80:
        return value[:77] + "..."
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def write_tables(folder: Path, swept: list[str], rows: list[dict]) -> str:
    columns = ["job", *swept, *METRIC_COLUMNS]
    with open(folder / "report.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[row[c] for c in columns] for row in rows])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    markdown = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(markdown)
    return markdown


def _as_number(value: str):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def log_scale(key: str, numbers) -> bool:
    """Sweeps of scales (learning rates above all) are laid out in powers: a log axis when the
    values are positive and a learning rate, or span a factor of 3 or more."""
    positive = [n for n in numbers if n > 0]
    if len(positive) < len(numbers) or len(set(positive)) < 2:
        return False
    return "learning_rate" in key or key.endswith("lr") or max(positive) / min(positive) >= 3


def _value_axis(ax, key: str, numbers) -> None:
    """The swept values themselves as ticks, printed short (1e-4 as 0.0001, never
    0.00100000...): readable where matplotlib's own labels ran into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    if log_scale(key, numbers):
        ax.set_xscale("log")
    distinct = sorted(set(numbers))
    if len(distinct) <= 8:
        ax.xaxis.set_major_locator(FixedLocator(distinct))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def draw(folder: Path, swept: list[str], rows: list[dict]) -> Path:
    """report.png: loss curves per job, and the final loss against each swept value."""
    import matplotlib.pyplot as plt

    fig = figure(folder, swept, rows)
    path = folder / "report.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figure(folder: Path, swept: list[str], rows: list[dict]):
    """The report's matplotlib figure (draw() saves it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = 1 + len(swept)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {id(row): palette[i % len(palette)] for i, row in enumerate(rows)}  # one per job
    curves = axes[0][0]
    for row in rows:
        records = RunDir(row["_dir"]).metrics()
        points = [(r["step"], r["loss"]) for r in records if "loss" in r]
        if points:
            label = ", ".join(f"{k}={row[k]}" for k in swept) or row["job"]
            curves.plot(*zip(*points), label=label, color=color[id(row)],
                        linestyle="-" if row["status"] == "finished" else ":")
    curves.set(title="training loss", xlabel="step", ylabel="token loss")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    if len(rows) <= 12:
        curves.legend(fontsize=7)
    finished = [r for r in rows if r["status"] == "finished"]
    for ax, key in zip(axes[0][1:], swept):
        values = [r[key] for r in finished]
        numbers = [_as_number(v) for v in values]
        losses = [float(r["final_loss"]) for r in finished]
        colors = [color[id(r)] for r in finished]
        if numbers and all(n is not None for n in numbers):
            ax.scatter(numbers, losses, c=colors)
            _value_axis(ax, key, numbers)
        else:
            labels = sorted(set(values))
            ax.scatter([labels.index(v) for v in values], losses, c=colors)
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        ax.set(title=f"final loss by {key}", xlabel=key, ylabel="final token loss")
    fig.suptitle(str(folder.resolve()), fontsize=8)
    fig.tight_layout()
    return fig


@startup.command
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a run folder or a sweep folder")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        raise UserError(f"{args.folder} is not a folder: give a run or sweep folder")
    swept, rows = collect(args.folder)
    print(write_tables(args.folder, swept, rows), end="")
    picture = draw(args.folder, swept, rows)
    print(f"wrote {args.folder / 'report.csv'}, {args.folder / 'report.md'}, {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m runner.rerun RUN_DIR`: run a finished run again from its folder, and say whether
it reproduced.

    python -m runner.rerun outputs/default/2026-11-23_14-49-09

It trains the folder's resolved_config.yaml (exactly what ran, interpolations resolved) into a
new folder beside it, then compares metrics.jsonl (losses, accuracy, learning rate, token
counts: everything the config and seed determine) and the environment the numbers depend on
(env.json: git commit, package versions, devices, process count). Exit 0 when the metrics are
identical, 1 when they differ (with the first differing step), 2 for a folder it cannot use.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from runner.errors import UserError

ENV_KEYS = ("git", "python", "packages", "backend", "device_kind", "devices", "process_count")


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m runner.rerun",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (with resolved_config.yaml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the new run (default: RUN_DIR-rerun-<time> beside it)")
    return parser.parse_args(argv)


def load_config(run_dir: Path):
    """The run's resolved config, typed by the schema (as Hydra would give it)."""
    from omegaconf import OmegaConf

    from runner.config import Config

    path = run_dir / "resolved_config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} has no resolved_config.yaml: give a run folder made by "
                        "python -m runner")
    return OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.is_file() else []


def compare_metrics(a: Path, b: Path) -> str | None:
    """None when the two metrics.jsonl are identical; else where they first differ."""
    first, second = _records(a / "metrics.jsonl"), _records(b / "metrics.jsonl")
    for x, y in zip(first, second):
        if x != y:
            return f"step {x.get('step')}: {x} then, {y} now"
    if len(first) != len(second):
        return f"{len(first)} records then, {len(second)} now"
    return None


def compare_environment(a: Path, b: Path) -> list[str]:
    then, now = (json.loads((d / "env.json").read_text()) if (d / "env.json").is_file() else {}
                 for d in (a, b))
    return [f"{key}: {then.get(key)!r} then, {now.get(key)!r} now"
            for key in ENV_KEYS if then.get(key) != now.get(key)]


def main(argv=None) -> int:
    args = _parse(argv)
    run_dir = args.run_dir.resolve()
    try:
        cfg = load_config(run_dir)
        if not (run_dir / "metrics.jsonl").is_file():
            raise UserError(f"{run_dir} has no metrics.jsonl to compare with: rerun a run that "
                            "trained")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = (args.out or run_dir.parent / f"{run_dir.name}-rerun-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)

    from runner.environment import quiet_library_loggers, set_process_environment

    set_process_environment(cfg.cpu_devices)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - "
                        "%(message)s", handlers=[logging.StreamHandler(),
                                                 logging.FileHandler(out / "runner.log")])
    quiet_library_loggers()
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
    from runner import train

    try:
        train.run(cfg, out)
    except UserError as exc:
        train.fail(out, exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    difference = compare_metrics(run_dir, out)
    for line in compare_environment(run_dir, out):
        print(f"environment differs: {line}")
    if difference:
        print(f"NOT reproduced: metrics.jsonl differs at {difference} ({out})")
        return 1
    print(f"reproduced: metrics.jsonl identical ({len(_records(out / 'metrics.jsonl'))} "
          f"records) in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

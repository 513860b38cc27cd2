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
import sys
import time
from pathlib import Path

from runner import startup
from runner.errors import UserError
from runner.rundir import METRICS, RunDir

ENV_KEYS = ("git", "python", "packages", "backend", "device_kind", "devices", "process_count")


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m runner.rerun",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (with resolved_config.yaml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the new run (default: RUN_DIR-rerun-<time> beside it)")
    return parser.parse_args(argv)


def compare_metrics(then: RunDir, now: RunDir) -> str | None:
    """None when the two metrics.jsonl are identical; else where they first differ."""
    first, second = then.metrics(), now.metrics()
    for x, y in zip(first, second):
        if x != y:
            return f"step {x.get('step')}: {x} then, {y} now"
    if len(first) != len(second):
        return f"{len(first)} records then, {len(second)} now"
    return None


def compare_environment(then: RunDir, now: RunDir) -> list[str]:
    a, b = then.env(), now.env()
    return [f"{key}: {a.get(key)!r} then, {b.get(key)!r} now"
            for key in ENV_KEYS if a.get(key) != b.get(key)]


@startup.command
def main(argv=None) -> int:
    args = _parse(argv)
    then = RunDir(args.run_dir.resolve())
    cfg = then.config()
    if not (then / METRICS).is_file():
        raise UserError(f"{then.path} has no {METRICS} to compare with: rerun a run that trained")
    out = args.out or then.path.parent / f"{then.path.name}-rerun-{time.strftime('%Y%m%d-%H%M%S')}"
    now = RunDir(out)
    now.path.mkdir(parents=True, exist_ok=True)
    startup.start(cfg)
    startup.log_to_file(now / "runner.log")
    from runner import train

    try:
        train.run(cfg, now.path)
    except UserError as exc:
        now.fail(exc)
        raise
    difference = compare_metrics(then, now)
    for line in compare_environment(then, now):
        print(f"environment differs: {line}")
    if difference:
        print(f"NOT reproduced: metrics.jsonl differs at {difference} ({now.path})")
        return 1
    print(f"reproduced: metrics.jsonl identical ({len(now.metrics())} records) in {now.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The run folder's own files: resolved_config.yaml, env.json, summary.json, samples.jsonl.

summary.json is written first with status "running" and rewritten at the end with "finished"
or "failed", so a folder never looks finished unless the run finished.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from runner.errors import UserError

PACKAGES = ["keras", "keras-hub", "jax", "jaxlib", "tensorflow", "tensorflow-text",
            "tensorflow-datasets", "hydra-core", "omegaconf", "wandb", "sentencepiece", "numpy",
            "ml-dtypes"]
FINISHED_MARKERS = ("summary.json", "metrics.jsonl")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RunDirTaken(UserError):
    """The run folder holds an earlier run: report it, and touch nothing in it."""


def claim(run_dir: Path) -> None:
    """Refuse a folder that already holds a run, so nothing a user has is overwritten."""
    taken = [m for m in FINISHED_MARKERS if (run_dir / m).exists()]
    if taken:
        raise RunDirTaken(f"hydra.run.dir={run_dir} already holds a run ({', '.join(taken)}); "
                        "choose a new folder (the default one is new for every run)")


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def _git() -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def environment(mesh_axes: dict) -> dict:
    """What a run's numbers depend on besides the config."""
    import jax

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "git": _git(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "mesh": mesh_axes,
    }

"""The run folder's own files: resolved_config.yaml, env.json, summary.json, samples.jsonl,
and the claim a run makes on its folder.

summary.json is written first with status "running" and rewritten at the end with "finished"
or "failed", so a folder never looks finished unless the run finished. A folder whose run was
cut (status still "running" or "failed", no live process holding its lock) is resumed from its
last checkpoint when the same config runs in it again; a finished one is left as it is.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Optional

import yaml

from runner.errors import UserError

PACKAGES = ["keras", "keras-hub", "jax", "jaxlib", "tensorflow", "tensorflow-text",
            "tensorflow-datasets", "hydra-core", "omegaconf", "wandb", "sentencepiece", "numpy",
            "ml-dtypes"]
FINISHED_MARKERS = ("summary.json", "metrics.jsonl")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RunDirTaken(UserError):
    """The run folder cannot be used: report it, and touch nothing in it."""


@dataclass
class Claim:
    """What a run folder holds when a run starts in it.

    state: "new" (empty), "finished" (nothing to do), "resume" (interrupted, with a checkpoint),
    "restart" (interrupted before its first checkpoint). The lock is held until release()."""
    state: str
    summary: Optional[dict] = None
    checkpoint: Optional[object] = None  # runner.checkpoints.Checkpoint
    lock: Optional[IO] = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()  # closing drops the flock
            self.lock = None


def _lock(run_dir: Path) -> IO:
    """An exclusive lock on the folder for this process's life: two processes never train into
    one folder, and a killed process's lock goes with it (the OS drops it)."""
    handle = open(run_dir / ".lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunDirTaken(f"hydra.run.dir={run_dir} is in use by another running process; "
                          "wait for it, or choose a new folder") from None
    return handle


def _first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"


def claim(run_dir: Path, resolved: dict, resume: bool) -> Claim:
    """Lock the folder and say what to do with what it holds. A folder holding a run of another
    config is refused; so is any run when resume is off. Nothing in it is changed here."""
    lock = _lock(run_dir)
    try:
        taken = [m for m in FINISHED_MARKERS if (run_dir / m).exists()]
        if not taken:
            return Claim("new", lock=lock)
        if not resume:
            raise RunDirTaken(
                f"hydra.run.dir={run_dir} already holds a run ({', '.join(taken)}) and "
                "train.resume=false; choose a new folder (the default one is new for every run)")
        config_path = run_dir / "resolved_config.yaml"
        before = yaml.safe_load(config_path.read_text()) if config_path.exists() else None
        if before is not None and before != resolved:
            raise RunDirTaken(
                f"hydra.run.dir={run_dir} holds a run of another config "
                f"({_first_difference(before, resolved)}); resume it with its own config, "
                "or choose a new folder")
        summary = json.loads((run_dir / "summary.json").read_text()) \
            if (run_dir / "summary.json").exists() else {}
        if summary.get("status") == "finished":
            return Claim("finished", summary=summary, lock=lock)
        from runner import checkpoints

        checkpoint = checkpoints.latest(run_dir)
        return Claim("resume" if checkpoint else "restart", summary=summary,
                     checkpoint=checkpoint, lock=lock)
    except BaseException:
        lock.close()
        raise


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


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
        "pid": os.getpid(),
        "process_index": jax.process_index(),
        "mesh": mesh_axes,
    }

"""What a run's numbers depend on besides its config (env.json): git commit and dirty flag,
package versions, Python, devices, mesh, process count."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ["keras", "keras-hub", "jax", "jaxlib", "tensorflow", "tensorflow-text",
            "tensorflow-datasets", "hydra-core", "omegaconf", "wandb", "sentencepiece", "numpy",
            "ml-dtypes", "orbax-checkpoint"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def git_state() -> dict:
    """The commit the runner's own code came from (None outside a git checkout)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment(mesh_axes: dict) -> dict:
    import jax

    devices = jax.devices()
    return {
        "git": git_state(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
        "process_count": jax.process_count(),
        "pid": os.getpid(),
        "process_index": jax.process_index(),
        "mesh": mesh_axes,
    }

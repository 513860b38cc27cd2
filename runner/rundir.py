"""The run folder: the name of every file in it, their readers and writers, the claim a run makes
on it, and the sweep's view of its job folders. Every module (and every test) goes through here.

summary.json is written first with status "running" and rewritten at the end with "finished"
or "failed", so a folder never looks finished unless the run finished. A folder whose run was
cut (status still "running" or "failed", no live process holding its lock) is resumed from its
last checkpoint when the same experiment runs in it again; a finished one is left as it is.
"Same experiment" ignores operational keys (runner.config.experiment_part): resuming with
another tracking mode or device count is fine.
"""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path
from typing import Optional

import yaml

from runner.config import load
from runner.errors import UserError

RESOLVED_CONFIG = "resolved_config.yaml"
ENV = "env.json"
METRICS = "metrics.jsonl"  # what config and seed determine: identical between runs
THROUGHPUT = "throughput.jsonl"  # timings, at the same steps
SUMMARY = "summary.json"
SAMPLES = "samples.jsonl"
SHARDING = "sharding.tsv"
ADAPTER = "adapter.lora.h5"  # keras-hub's LoRA weight file (the name must end .lora.h5)
PROBE = "adapter_probe.npz"  # logits a reloaded adapter must reproduce
MERGED = "merged_preset"
EXPORT = "export"  # python -m runner.export: Hugging Face folders, one per kind below
EXPORT_MERGED, EXPORT_ADAPTER, EXPORT_BASE = "merged", "adapter", "base"
CHECKPOINTS = "checkpoints"
SET_ASIDE = "checkpoints_set_aside"  # checkpoints that could not be restored, or a restart's
LOG = "runner.log"
EXPORT_LOG = "export.log"
LOCK = ".lock"
HYDRA = ".hydra"
# A folder holds a run once one of these exists.
RUN_MARKERS = (SUMMARY, METRICS)


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def write_json(path, obj) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_jsonl(path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def write_jsonl(path, records) -> None:
    """Atomic, as write_json: a process ended mid-write (a second stop signal) never leaves a
    cut file, which would lose records a resume does not log again."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    tmp.replace(path)


class RunDir:
    """One run's folder. `folder / NAME` is the path of one of its files."""

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def summary(self) -> dict:
        return read_json(self / SUMMARY) if (self / SUMMARY).is_file() else {}

    def write_summary(self, summary: dict) -> None:
        write_json(self / SUMMARY, summary)

    def metrics(self) -> list[dict]:
        return read_jsonl(self / METRICS)

    def throughput(self) -> list[dict]:
        return read_jsonl(self / THROUGHPUT)

    def samples(self) -> list[dict]:
        return read_jsonl(self / SAMPLES)

    def write_samples(self, samples) -> None:
        """(prompt, before, after) per prompt: what the model said before and after training."""
        write_jsonl(self / SAMPLES, [{"prompt": p, "before": b, "after": a} for p, b, a in samples])

    def env(self) -> dict:
        return read_json(self / ENV) if (self / ENV).is_file() else {}

    def resolved_config(self) -> Optional[dict]:
        path = self / RESOLVED_CONFIG
        return yaml.safe_load(path.read_text()) if path.is_file() else None

    def config(self):
        """The run's resolved config, typed by the schema (as Hydra gave it to the run)."""
        if not (self / RESOLVED_CONFIG).is_file():
            raise UserError(f"{self.path} is not a run folder (no {RESOLVED_CONFIG}): give a run "
                            "folder made by python -m runner")
        return load(self / RESOLVED_CONFIG)

    def write_resolved_config(self, resolved: dict) -> None:
        from omegaconf import OmegaConf

        (self / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(resolved))

    def overrides(self) -> list[str]:
        path = self / HYDRA / "overrides.yaml"
        return (yaml.safe_load(path.read_text()) or []) if path.is_file() else []

    @property
    def finished(self) -> bool:
        return self.summary().get("status") == "finished"

    def truncate_after(self, step: int) -> None:
        """Drop logged records past `step` (a resumed run logs them again, identically)."""
        for name in (METRICS, THROUGHPUT):
            if (self / name).exists():
                write_jsonl(self / name, [r for r in read_jsonl(self / name) if r["step"] <= step])

    def _held_by_another(self) -> bool:
        return _held(self)

    def fail(self, error: BaseException, status: str = "failed") -> None:
        """Mark the run failed (never leave it looking finished or running), or `status`
        ("interrupted": Ctrl-C before the run could listen for it). Process 0 only: the other
        processes of a multi-process program never write the folder."""
        jax = sys.modules.get("jax")
        if jax is not None and jax.process_index() != 0:
            return
        if not self.path.is_dir() or self.finished or self._held_by_another():
            return  # a finished run, or one a live process runs in, is not this one's to mark
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        try:
            self.write_summary({**self.summary(), "status": status, "error": text})
        except OSError:  # an unwritable folder cannot say it failed; the exit code does
            pass


def _held(folder: "RunDir") -> bool:
    """Does a live process hold the folder's lock? (This one's claim is released by the time
    a failure is marked.)"""
    if not (folder / LOCK).exists():
        return False
    with open(folder / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


class RunDirTaken(UserError):
    """The run folder cannot be used: report it, and touch nothing in it."""


def job_folders(sweep_dir) -> dict[Path, dict]:
    """Every run folder under a sweep folder (or the run folder itself) -> its summary."""
    sweep_dir = Path(sweep_dir)
    found = {}
    for path in sorted(sweep_dir.rglob(SUMMARY)):
        parts = path.relative_to(sweep_dir).parts
        if "wandb" in parts or CHECKPOINTS in parts:
            continue
        try:
            found[path.parent] = read_json(path)
        except (OSError, json.JSONDecodeError):
            found[path.parent] = {"status": "unreadable"}
    return found

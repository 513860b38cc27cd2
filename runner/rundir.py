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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Optional

import yaml

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
        from runner.config import load

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


@dataclass
class Claim:
    """What a run folder holds when a run starts in it.

    state: "new" (empty), "finished" (nothing to do), "resume" (cut, with checkpoints: the run
    resumes from the newest that restores), "restart" (cut before its first checkpoint). The
    lock is held until release()."""
    state: str
    summary: Optional[dict] = None
    checkpoints: tuple = ()  # runner.checkpoints.Checkpoint, newest first
    lock: Optional[IO] = None

    @property
    def start_step(self) -> int:
        """The step the run resumes from if its newest checkpoint restores."""
        return self.checkpoints[0].step if self.state == "resume" else 0

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()  # closing drops the flock
            self.lock = None

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(folder: RunDir) -> IO:
    """An exclusive lock on the folder for this process's life: two processes never train into
    one folder, and a killed process's lock goes with it (the OS drops it)."""
    handle = open(folder / LOCK, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunDirTaken(f"hydra.run.dir={folder.path} is in use by another running process; "
                          "wait for it, or choose a new folder") from None
    return handle


def first_difference(a, b, prefix="") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"


def claim(folder: RunDir, resolved: dict, resume) -> Claim:
    """Lock the folder and say what to do with what it holds. A folder holding a run of another
    experiment is refused; so is any run when resume is off (false). Nothing in it is changed
    here."""
    from runner.config import experiment_part

    folder.path.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder)
    try:
        taken = [m for m in RUN_MARKERS if (folder / m).exists()]
        if not taken:
            return Claim("new", lock=lock)
        if resume is False:
            raise RunDirTaken(
                f"hydra.run.dir={folder.path} already holds a run ({', '.join(taken)}) and "
                "train.resume=false; choose a new folder (the default one is new for every run)")
        before = folder.resolved_config()
        if before is not None and experiment_part(before) != experiment_part(resolved):
            raise RunDirTaken(
                f"hydra.run.dir={folder.path} holds a run of another config "
                f"({first_difference(experiment_part(before), experiment_part(resolved))}); "
                "resume it with its own config, or choose a new folder")
        summary = folder.summary()
        if summary.get("status") == "finished":
            return Claim("finished", summary=summary, lock=lock)
        from runner import checkpoints

        found = tuple(checkpoints.complete(folder))
        return Claim("resume" if found else "restart", summary=summary, checkpoints=found,
                     lock=lock)
    except BaseException:
        lock.close()
        raise


_CLAIM_STATES = ("new", "finished", "resume", "restart")
_SHARED_STEPS = 16  # checkpoints a multi-process run may try, newest first


def claim_across_processes(folder: RunDir, resolved: dict, resume) -> Claim:
    """Process 0 claims the folder; in a multi-process program it tells the others what it
    found (they read the same shared folder, and must all resume from the same step)."""
    import jax

    if jax.process_count() == 1:
        return claim(folder, resolved, resume)
    import numpy as np
    from jax.experimental import multihost_utils

    # [state, newest step, ..., oldest step, -1 ...]: every process tries the checkpoints
    # process 0 found, in its order (a shared file system may list them otherwise elsewhere)
    found, refused, code = None, None, [-1] + [-1] * _SHARED_STEPS
    if jax.process_index() == 0:
        try:
            found = claim(folder, resolved, resume)
            steps = [c.step for c in found.checkpoints][:_SHARED_STEPS]
            code = [_CLAIM_STATES.index(found.state)] + steps + [-1] * (_SHARED_STEPS - len(steps))
        except UserError as exc:
            refused = exc
    code = [int(c) for c in multihost_utils.broadcast_one_to_all(np.array(code, np.int32))]
    if refused is not None:
        raise refused
    if code[0] < 0:
        raise RunDirTaken(f"process 0 refused hydra.run.dir={folder.path} (see its log)")
    if found is not None:
        return found
    from runner import checkpoints

    state = _CLAIM_STATES[code[0]]
    return Claim(state, summary=folder.summary() if state == "finished" else None,
                 checkpoints=tuple(checkpoints.at(folder, step) for step in code[1:] if step >= 0))


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

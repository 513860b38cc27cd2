"""Claiming a run folder when a run starts in it: new, finished, or cut (resume from its newest
checkpoint that restores, or restart); the lock that keeps two runs out of one folder; and the
agreement of every process of a multi-process run on one claim. The folder's names and files
are runner/rundir.py's; the checkpoints are runner/checkpoints.py's."""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from typing import IO, Optional

from runner import checkpoints
from runner.config import experiment_part
from runner.errors import UserError
from runner.rundir import LOCK, RUN_MARKERS, RunDir, RunDirTaken


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
    state = _CLAIM_STATES[code[0]]
    return Claim(state, summary=folder.summary() if state == "finished" else None,
                 checkpoints=tuple(checkpoints.at(folder, step) for step in code[1:] if step >= 0))



"""Checkpoints every `train.checkpoint_every` steps, and resuming from the last one.

A checkpoint holds what the frozen preset cannot give back: the trainable weights (the LoRA
kernels, or every weight without LoRA), the optimizer's variables (slots, iteration, learning
rate), the metric accumulators (so the resumed run logs exactly what an uninterrupted one would),
any random-generator state, and the loggers' running lists. The frozen base is reloaded from its
preset, and the data stream is replayed to the checkpoint's step (the pipeline is a pure
function of config and seed).

Why not keras's ModelCheckpoint or Orbax: ModelCheckpoint saves the whole model at epoch ends
(a LoRA run would write the frozen 7B base every time, and a mid-epoch kill loses the epoch), and
Orbax is not a dependency of keras here. The state is small for LoRA, so it is copied to host
memory at the step (the only part that waits for the device) and written by a background thread:
training goes on while the file is written. Files appear atomically (a folder renamed into
place), and the last `KEEP` are kept.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from runner.rundir import CHECKPOINTS, RunDir

log = logging.getLogger(__name__)

KEEP = 2
_STATE, _META = "state.npz", "meta.json"


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


def _name(step: int) -> str:
    return f"step_{step:08d}"


def latest(folder: RunDir) -> Optional[Checkpoint]:
    """The newest complete checkpoint in a run folder, or None."""
    root = folder / CHECKPOINTS
    done = sorted(p for p in root.glob("step_*") if (p / _META).is_file()) if root.is_dir() else []
    return Checkpoint(int(done[-1].name.split("_")[1]), done[-1]) if done else None


def _groups(model) -> dict[str, list]:
    """The variables a checkpoint holds, by group, in a fixed order."""
    seeds = [v for v in model.non_trainable_variables if "seed_generator" in v.path]
    return {"trainable": list(model.trainable_variables),
            "optimizer": list(model.optimizer.variables),
            "metrics": list(model.metrics_variables),
            "seeds": seeds}


def at(folder: RunDir, step: int) -> Checkpoint:
    return Checkpoint(step, folder / CHECKPOINTS / _name(step))


def _host_copy(value) -> np.ndarray:
    """The whole array on this host. Across processes a sharded array is gathered (a collective:
    every process calls this at the same step)."""
    import jax

    if jax.process_count() > 1 and not value.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(value, tiled=True))
    return np.asarray(value)


def capture(model) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """Host copies of every checkpointed variable (call with the state synced)."""
    arrays, paths = {}, {}
    for group, variables in _groups(model).items():
        paths[group] = [v.path for v in variables]
        for i, v in enumerate(variables):
            arrays[f"{group}/{i}"] = _host_copy(v.value)
    return arrays, paths


def write(folder: RunDir, step: int, arrays: dict, meta: dict) -> Path:
    """Write one checkpoint atomically and drop all but the newest KEEP."""
    root = folder / CHECKPOINTS
    root.mkdir(exist_ok=True)
    final = root / _name(step)
    tmp = root / (_name(step) + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.savez(tmp / _STATE, **arrays)
    (tmp / _META).write_text(json.dumps({"step": step, **meta}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(p for p in root.glob("step_*") if p.is_dir() and
                      not p.name.endswith(".tmp"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read(checkpoint: Checkpoint) -> tuple[dict[str, np.ndarray], dict]:
    meta = json.loads((checkpoint.path / _META).read_text())
    with np.load(checkpoint.path / _STATE) as state:
        return {k: state[k] for k in state.files}, meta


def restore(model, arrays: dict, paths: dict) -> None:
    """Assign a checkpoint's values; the variables keep their layouts (the plan is re-verified
    after)."""
    for group, variables in _groups(model).items():
        saved = paths.get(group, [])
        if [v.path for v in variables] != saved:
            raise RuntimeError(f"checkpoint does not fit this model: its {group} variables "
                               f"differ ({len(saved)} saved, {len(variables)} here)")
        for i, v in enumerate(variables):
            v.assign(arrays[f"{group}/{i}"])


def trainable_values(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The trained variables a checkpoint holds, by path (what an export of a full fine-tune
    needs; the optimizer's state stays behind)."""
    arrays, meta = read(checkpoint)
    return {path: arrays[f"trainable/{i}"] for i, path in enumerate(meta["paths"]["trainable"])}


class Saver:
    """Writes checkpoints on a background thread, one at a time."""

    def __init__(self, folder: RunDir, write: bool = True):
        """write=False (processes other than 0): capture along with the others, write nothing."""
        self.folder, self.write = folder, write
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def save(self, step: int, arrays: dict, meta: dict) -> None:
        if not self.write:
            return
        self.wait()  # the previous write must be done before the next starts

        def target():
            try:
                path = write(self.folder, step, arrays, meta)
                log.info("checkpoint: %s", path)
            except BaseException as exc:  # surfaced on the training thread by wait()
                self._error = exc
        self._thread = threading.Thread(target=target, name=f"checkpoint-{step}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

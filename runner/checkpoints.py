"""Checkpoints every `train.checkpoint_every` steps through Orbax, and resuming from the last one.

A checkpoint holds what the frozen preset cannot give back: the trainable weights (the LoRA
kernels, or every weight without LoRA), the optimizer's variables (slots, iteration, learning
rate), the metric accumulators (so the resumed run logs exactly what an uninterrupted one would),
any random-generator state, and the loggers' running lists. The frozen base is reloaded from its
preset, and the data stream is replayed to the checkpoint's step (the pipeline is a pure
function of config and seed).

Why Orbax (orbax-checkpoint) and not keras's ModelCheckpoint or OrbaxCheckpoint callbacks: those
save the whole model (a LoRA run would rewrite its frozen 7B base every time), and at epoch ends.
Orbax is given the runner's own state tree: every process writes the shards it holds (nothing is
gathered to one host), asynchronously (the step waits only for the device-to-host copy), into a
temporary folder renamed into place when every process is done (atomic steps), keeping the
newest KEEP. Restoring takes the shardings of the model being resumed, so a checkpoint written by
2 processes restores into 1 (or onto another mesh).

Layout: checkpoints/step_00000020/{state,meta}/ (Orbax's PyTree and JSON items).

A checkpoint that cannot be restored (a file of it damaged or missing: a full disk, a cut copy)
is found by restoring it for real; runner.train then sets it aside (set_aside: moved into
checkpoints_set_aside/, never deleted) and resumes from the newest one that restores.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from runner.errors import UserError
from runner.rundir import CHECKPOINTS, SET_ASIDE, RunDir

log = logging.getLogger(__name__)

KEEP = 2
_STATE, _META = "state", "meta"
_STEP = re.compile(r"step_(\d{8})")  # a finished step; Orbax's temporary folders have a suffix


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


def _name(step: int) -> str:
    return f"step_{step:08d}"


def _name_format():
    import orbax.checkpoint as ocp

    return ocp.step.standard_name_format(step_prefix="step", step_format_fixed_length=8)


def complete(folder: RunDir) -> list[Checkpoint]:
    """Every checkpoint of a run folder that Orbax finalized, newest first: by Orbax's own
    markers (a step is written into a temporary folder and renamed when every process is done;
    on object stores, its commit_success file), holding both items (a folder copied by hand may
    lack one). Whether its files can be read is known only by restoring it."""
    root = folder / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [Checkpoint(int(m.step), Path(m.path)) for m in _name_format().find_all(root)]
    return sorted((c for c in found if (c.path / _META).is_dir() and (c.path / _STATE).is_dir()),
                  key=lambda c: c.step, reverse=True)


def latest(folder: RunDir) -> Optional[Checkpoint]:
    """The newest complete checkpoint in a run folder, or None."""
    found = complete(folder)
    return found[0] if found else None


def at(folder: RunDir, step: int) -> Checkpoint:
    return Checkpoint(step, folder / CHECKPOINTS / _name(step))


# TensorStore's status codes (absl's) that mean the bytes on disk are wrong or missing. Others
# (RESOURCE_EXHAUSTED, PERMISSION_DENIED, UNAVAILABLE, ...) say nothing against the checkpoint.
_DAMAGE_CODES = ("DATA_LOSS", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND",
                 "INVALID_ARGUMENT")


def damage(exc: BaseException) -> Optional[str]:
    """Why a failed restore means the checkpoint's files are damaged or missing, in a few words;
    None when the failure is something else (memory, permissions, a file system away), which
    must not get a good checkpoint set aside."""
    import json

    chain, seen = [], exc
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for e in chain:
        if isinstance(e, FileNotFoundError):
            return "a file of it is missing"
        if isinstance(e, json.JSONDecodeError):
            return "a metadata file of it is not valid JSON"
        text = str(e).strip()
        code = next((c for c in _DAMAGE_CODES if text.startswith(c + ":")), None)
        if code is not None:
            return f"a file of it is damaged or missing ({code})"
        if text.startswith("Found incomplete checkpoint"):
            return "Orbax marks it incomplete"
    return None


def set_aside(folder: RunDir, checkpoint: Checkpoint) -> Path:
    """Move a checkpoint out of Orbax's sight (never delete it: what a run wrote stays) into
    checkpoints_set_aside/; returns where it went."""
    root = folder / SET_ASIDE
    root.mkdir(exist_ok=True)
    target, n = root / checkpoint.path.name, 1
    while target.exists():
        n += 1
        target = root / f"{checkpoint.path.name}-{n}"
    checkpoint.path.rename(target)
    return target


def _groups(model) -> dict[str, list]:
    """The variables a checkpoint holds, by group, in a fixed order."""
    seeds = [v for v in model.non_trainable_variables if "seed_generator" in v.path]
    return {"trainable": list(model.trainable_variables),
            "optimizer": list(model.optimizer.variables),
            "metrics": list(model.metrics_variables),
            "seeds": seeds}


def capture(model) -> tuple[dict[str, list], dict[str, list[str]]]:
    """The checkpointed state as arrays (where they live: sharded, on device) and the variables'
    paths. Call with the JAX state synced into the variables (`callback.model` does that)."""
    state, paths = {}, {}
    for group, variables in _groups(model).items():
        paths[group] = [v.path for v in variables]
        state[group] = [v.value for v in variables]
    return state, paths


def _manager(folder: RunDir, read_only: bool = False):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=KEEP, step_name_format=_name_format(), create=not read_only,
        read_only=read_only, enable_async_checkpointing=not read_only,
        cleanup_tmp_directories=not read_only)  # a write cut by SIGKILL leaves one
    return ocp.CheckpointManager((folder / CHECKPOINTS).resolve(), options=options,
                                 item_names=(_STATE, _META))


class Mismatch(UserError):
    """A checkpoint that was read, of a model with other variables."""


def _read_meta(checkpoint: Checkpoint) -> dict:
    import orbax.checkpoint as ocp

    return ocp.JsonCheckpointHandler().restore(checkpoint.path / _META)


def restore(model, checkpoint: Checkpoint) -> dict:
    """Assign a checkpoint's values to the model's variables, each read straight into the
    variable's own sharding; return its meta (paths, callbacks' state). Any error but Mismatch
    means the checkpoint cannot be read.

    Orbax's handlers are called directly, not through its Checkpointer, whose restore ends with
    a barrier of every process: a process that cannot read its shards would leave the others
    waiting there, where runner.train has them agree on the outcome instead."""
    import jax
    import orbax.checkpoint as ocp

    meta = _read_meta(checkpoint)
    groups = _groups(model)
    for group, variables in groups.items():
        saved = meta["paths"].get(group, [])
        if [v.path for v in variables] != saved:
            raise Mismatch(f"{checkpoint.path} does not fit this model: its {group} variables "
                           f"differ ({len(saved)} saved, {len(variables)} here); resume with the "
                           "runner version that wrote it, or train in a new folder")
    target = {group: [jax.ShapeDtypeStruct(v.value.shape, v.value.dtype,
                                           sharding=v.value.sharding) for v in variables]
              for group, variables in groups.items()}
    handler = ocp.PyTreeCheckpointHandler()
    try:
        values = handler.restore(
            checkpoint.path / _STATE,
            args=ocp.args.PyTreeRestore(target,
                                        restore_args=ocp.checkpoint_utils.construct_restore_args(
                                            target)))
    finally:
        handler.close()
    for group, variables in groups.items():
        for v, value in zip(variables, values[group]):
            v.assign(value)
    return meta


def trainable_values(checkpoint: Checkpoint) -> dict:
    """The trained variables a checkpoint holds, by path, as NumPy arrays on this host (what an
    export of a full fine-tune needs; the optimizer's state stays behind)."""
    import numpy as np
    import orbax.checkpoint as ocp

    meta = _read_meta(checkpoint)
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    tree = ocp.PyTreeCheckpointHandler().metadata(checkpoint.path / _STATE).tree
    restore_args = jax_tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    values = checkpointer.restore(checkpoint.path / _STATE,
                                  args=ocp.args.PyTreeRestore(restore_args=restore_args))
    return {path: np.asarray(values["trainable"][i])
            for i, path in enumerate(meta["paths"]["trainable"])}


def jax_tree_map(fn, tree):
    import jax

    return jax.tree.map(fn, tree, is_leaf=lambda x: not isinstance(x, (dict, list, tuple)))


class Saver:
    """Orbax's CheckpointManager for a run folder: every process calls save() at the same step
    (each writes its own shards; process 0 the meta), the write goes on in the background."""

    def __init__(self, folder: RunDir):
        self.folder = folder
        self._manager = None

    def save(self, step: int, state: dict, meta: dict) -> Path:
        """Start writing step `step`; returns the folder it will have once complete."""
        import orbax.checkpoint as ocp

        if self._manager is None:
            self._manager = _manager(self.folder)
        self._manager.save(step, args=ocp.args.Composite(**{
            _STATE: ocp.args.PyTreeSave(state),
            _META: ocp.args.JsonSave({"step": step, **meta})}))
        log.info("checkpoint: step %d (writing in the background)", step)
        return self.folder / CHECKPOINTS / _name(step)

    def wait(self) -> None:
        """Block until the last save is on disk; a failed write is raised here."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

"""Orbax checkpoints, in-process: written in the background and read back exactly (into the
variables' own shardings), the newest KEEP kept, a half-written one never taken for a checkpoint,
a failed write surfacing on the training thread."""

import numpy as np
import pytest

from runner import checkpoints
from runner.rundir import CHECKPOINTS, RunDir


def _state(seed: int):
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    return {"trainable": [jnp.asarray(rng.normal(size=(4, 3)).astype("float32"))],
            "optimizer": [jnp.asarray(seed, "int32")], "metrics": [], "seeds": []}


def test_saves_in_the_background_keeps_the_newest_and_reads_back_exactly(tmp_path):
    folder = RunDir(tmp_path)
    saver = checkpoints.Saver(folder)
    for step in (10, 20, 30):
        saver.save(step, _state(step), {"paths": {"trainable": ["w"], "optimizer": ["it"]}})
    saver.wait()
    saver.close()
    kept = sorted(p.name for p in (folder / CHECKPOINTS).iterdir())
    assert kept == ["step_00000020", "step_00000030"] and checkpoints.KEEP == 2
    newest = checkpoints.latest(folder)
    assert newest.step == 30
    values = checkpoints.trainable_values(newest)
    assert list(values) == ["w"]
    expected = np.asarray(_state(30)["trainable"][0])
    assert values["w"].dtype == expected.dtype and np.array_equal(values["w"], expected)


def test_a_half_written_checkpoint_is_not_taken(tmp_path):
    folder = RunDir(tmp_path)
    saver = checkpoints.Saver(folder)
    saver.save(10, _state(1), {"paths": {}})
    saver.close()
    # a write cut by SIGKILL: Orbax's temporary folder, never renamed into place
    (folder / CHECKPOINTS / "step_00000020.orbax-checkpoint-tmp-1").mkdir()
    (folder / CHECKPOINTS / "step_00000030").mkdir()  # copied by hand, no items: incomplete
    assert checkpoints.latest(folder).step == 10


def test_restore_puts_values_into_the_model_with_its_shardings(tmp_path):
    """A Keras model's state saved, the model perturbed, the state restored: values identical,
    every variable keeps its sharding; a model with other variables is refused."""
    import keras

    def make():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.Adam(), loss="mse", metrics=["mae"])
        model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
        return model
    model = make()
    folder = RunDir(tmp_path)
    state, paths = checkpoints.capture(model)
    saved = {v.path: np.asarray(v.value) for v in model.trainable_variables}
    saver = checkpoints.Saver(folder)
    saver.save(5, state, {"paths": paths, "callbacks": {}})
    saver.wait()
    saver.close()
    for v in model.trainable_variables:
        v.assign(np.zeros(v.shape))
    shardings = [v.value.sharding for v in model.trainable_variables]
    meta = checkpoints.restore(model, checkpoints.latest(folder))
    assert meta["step"] == 5 and meta["paths"] == paths
    for v, sharding in zip(model.trainable_variables, shardings):
        assert np.array_equal(np.asarray(v.value), saved[v.path])
        assert v.value.sharding == sharding
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    other.compile(optimizer=keras.optimizers.Adam(), loss="mse", metrics=["mae"])
    other.fit(np.ones((4, 3)), np.ones((4, 1)), epochs=1, verbose=0)
    with pytest.raises(checkpoints.Mismatch, match="does not fit this model"):
        checkpoints.restore(other, checkpoints.latest(folder))


def _largest_file(path):
    return max((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["truncated", "deleted", "zeroed", "meta_deleted"])
def test_a_damaged_checkpoint_is_listed_but_fails_a_real_restore_and_can_be_set_aside(
        tmp_path, damage):
    """Orbax's markers say complete (the folder was finalized); only reading it tells. A
    checkpoint set aside is moved, never deleted, and Orbax no longer lists it."""
    import jax

    import jax.numpy as jnp

    def state(seed):  # random values: compressed, a constant array would be a few bytes
        values = np.random.default_rng(seed).normal(size=(64, 64)).astype("float32")
        return {"trainable": [jnp.asarray(values)],
                "optimizer": [jnp.asarray(seed, "int32")], "metrics": [], "seeds": []}

    folder = RunDir(tmp_path)
    saver = checkpoints.Saver(folder)
    for step in (10, 20):
        saver.save(step, state(step), {"paths": {"trainable": ["w"], "optimizer": ["it"],
                                                 "metrics": [], "seeds": []}})
    saver.close()
    newest = checkpoints.latest(folder)
    data = _largest_file(newest.path / "state" / "ocdbt.process_0")  # the arrays' bytes
    if damage == "truncated":
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "deleted":
        data.unlink()
    elif damage == "zeroed":
        blob = data.read_bytes()
        data.write_bytes(blob[:20] + bytes(len(blob) - 40) + blob[-20:])
    else:
        (newest.path / "meta" / "metadata").unlink()
    assert [c.step for c in checkpoints.complete(folder)] == [20, 10]

    class Model:  # what restore() reads off a Keras model: its variables, by group
        def __init__(self):
            values = state(0)
            self.trainable_variables = [_Variable("w", values["trainable"][0])]
            self.optimizer = type("O", (), {"variables": [_Variable("it", values["optimizer"][0])]})
            self.metrics_variables, self.non_trainable_variables = [], []

    model = Model()
    with pytest.raises(Exception) as failed:
        checkpoints.restore(model, newest)
    assert not isinstance(failed.value, checkpoints.Mismatch)
    assert checkpoints.damage(failed.value) is not None  # damage, not memory or permissions
    untouched = np.asarray(state(0)["trainable"][0])
    assert np.array_equal(np.asarray(model.trainable_variables[0].value), untouched)
    checkpoints.restore(model, checkpoints.complete(folder)[1])  # the one before still reads
    assert np.array_equal(np.asarray(model.trainable_variables[0].value),
                          np.asarray(state(10)["trainable"][0]))
    moved = checkpoints.set_aside(folder, newest)
    assert moved == tmp_path / "checkpoints_set_aside" / "step_00000020" and moved.is_dir()
    assert [c.step for c in checkpoints.complete(folder)] == [10]


class _Variable:
    def __init__(self, path, value):
        self.path, self.value = path, value

    def assign(self, value):
        self.value = value


def test_a_failed_write_surfaces_on_the_training_thread(tmp_path):
    (tmp_path / CHECKPOINTS).write_text("not a folder")  # the checkpoints folder cannot exist
    saver = checkpoints.Saver(RunDir(tmp_path))
    with pytest.raises(Exception):
        saver.save(6, _state(1), {"paths": {}})
        saver.wait()


@pytest.mark.slow
def test_a_full_fine_tune_keeps_its_last_step_resumes_from_it_and_exports(tmp_path):
    """Every weight trains: the final step is checkpointed (the only copy of the weights); a
    run cut right after it resumes with nothing left to train and ends with the same metrics;
    `python -m runner.export` then writes the merged model from that checkpoint."""
    import json

    from conftest import run_cli

    args = ["lora=none", "train.steps=4", "train.checkpoint_every=2", "train.log_every=2",
            "generate.prompts=[]", "tracking.mode=disabled", "hydra.run.dir=ft"]
    first = run_cli(*args, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = RunDir(tmp_path / "ft")
    assert checkpoints.latest(folder).step == 4
    metrics = (folder / "metrics.jsonl").read_text()
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "status": "running"}))  # cut
    again = run_cli(*args, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert folder.summary()["status"] == "finished" and folder.summary()["resumed_from_step"] == 4
    assert (folder / "metrics.jsonl").read_text() == metrics
    export = run_cli(str(folder.path), module="runner.export", cwd=tmp_path, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    assert (folder.path / "export" / "merged" / "config.json").is_file()


def test_only_damage_counts_as_damage():
    """A restore that fails for want of memory or permission must not get a good checkpoint
    set aside: only missing or unreadable bytes are damage."""
    import json

    def chained(outer, cause):
        outer.__cause__ = cause
        return outer

    read = "Encountered error while reading array index: (slice(0, 8, 1),)."
    assert checkpoints.damage(chained(Exception(read), ValueError(
        "OUT_OF_RANGE: Error reading \"w/0.0\": Requested byte range [0, 9) is not valid")))
    assert checkpoints.damage(ValueError("DATA_LOSS: Error opening \"zarr\" driver"))
    assert checkpoints.damage(FileNotFoundError("meta/metadata not found"))
    assert checkpoints.damage(json.JSONDecodeError("Expecting value", "{", 1))
    assert checkpoints.damage(chained(Exception(read), ValueError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate"))) is None
    assert checkpoints.damage(chained(Exception(read), ValueError(
        "PERMISSION_DENIED: Error opening file"))) is None
    assert checkpoints.damage(MemoryError()) is None

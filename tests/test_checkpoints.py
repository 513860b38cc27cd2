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
    with pytest.raises(RuntimeError, match="does not fit this model"):
        checkpoints.restore(other, checkpoints.latest(folder))


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

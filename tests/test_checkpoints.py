"""Checkpoint files, in-process: written atomically, read back exactly, the newest KEEP kept, a
half-written one never taken for a checkpoint."""

import numpy as np

from runner import checkpoints
from runner.rundir import CHECKPOINTS, RunDir


def test_write_read_and_rotation(tmp_path):
    folder = RunDir(tmp_path)
    rng = np.random.default_rng(0)
    written = {}
    for step in (10, 20, 30):
        arrays = {"trainable/0": rng.normal(size=(4, 3)).astype("float32"),
                  "optimizer/0": np.array(step, "int64")}
        checkpoints.write(folder, step, arrays, {"paths": {"trainable": ["w"]}})
        written[step] = arrays
    kept = sorted(p.name for p in (folder / CHECKPOINTS).iterdir())
    assert kept == ["step_00000020", "step_00000030"] and checkpoints.KEEP == 2
    newest = checkpoints.latest(folder)
    assert newest.step == 30
    arrays, meta = checkpoints.read(newest)
    assert meta == {"step": 30, "paths": {"trainable": ["w"]}}
    assert set(arrays) == set(written[30])
    for name, value in written[30].items():
        assert np.array_equal(arrays[name], value) and arrays[name].dtype == value.dtype


def test_a_half_written_checkpoint_is_not_taken(tmp_path):
    folder = RunDir(tmp_path)
    checkpoints.write(folder, 10, {"x": np.zeros(2)}, {})
    (folder / CHECKPOINTS / "step_00000020.tmp").mkdir()  # a write cut by SIGKILL
    (folder / CHECKPOINTS / "step_00000030").mkdir()  # renamed but no meta: not complete
    assert checkpoints.latest(folder).step == 10


def test_background_saver_writes_and_reports_errors(tmp_path):
    saver = checkpoints.Saver(RunDir(tmp_path))
    saver.save(5, {"x": np.arange(3)}, {})
    saver.wait()
    assert checkpoints.latest(RunDir(tmp_path)).step == 5
    (tmp_path / CHECKPOINTS).rename(tmp_path / "moved")
    (tmp_path / CHECKPOINTS).write_text("not a folder")  # the next write must fail loudly
    saver.save(6, {"x": np.arange(3)}, {})
    try:
        saver.wait()
    except OSError:
        pass
    else:
        raise AssertionError("a failed background write must surface on the training thread")

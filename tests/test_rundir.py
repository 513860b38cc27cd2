"""The run folder's owner, in-process: every state a claim can find, the lock, what "the same
experiment" means for resuming, the readers and writers, and marking a run failed."""

import fcntl

import pytest

from runner import checkpoints
from runner.claims import claim
from runner.rundir import METRICS, THROUGHPUT, RunDir, RunDirTaken, append_jsonl, job_folders

CONFIG = {"model": {"preset": "tiny_gemma"}, "train": {"steps": 6, "resume": True},
          "tracking": {"mode": "offline"}, "cpu_devices": 8, "seed": 0}


def _ran(folder: RunDir, status: str, config=CONFIG):
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_resolved_config(config)
    folder.write_summary({"status": status})


def test_an_empty_folder_is_new_and_locked(tmp_path):
    folder = RunDir(tmp_path / "run")
    with claim(folder, CONFIG, resume=True) as found:
        assert found.state == "new" and found.start_step == 0
        with pytest.raises(RunDirTaken, match="in use by another running process"):
            claim(folder, CONFIG, resume=True)
        with open(folder / ".lock") as other:  # the lock is a real flock, not a file's presence
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with claim(folder, CONFIG, resume=True) as again:  # released on exit
        assert again.state == "new"


def test_a_finished_folder_is_left_alone(tmp_path):
    folder = RunDir(tmp_path / "run")
    _ran(folder, "finished")
    with claim(folder, CONFIG, resume=True) as found:
        assert found.state == "finished" and found.summary == {"status": "finished"}


def test_a_cut_run_restarts_or_resumes_from_its_newest_checkpoint(tmp_path):
    folder = RunDir(tmp_path / "run")
    _ran(folder, "running")
    with claim(folder, CONFIG, resume=True) as found:
        assert found.state == "restart" and found.start_step == 0
    import jax.numpy as jnp

    saver = checkpoints.Saver(folder)
    for step in (10, 20):
        saver.save(step, {"trainable": [jnp.ones(3)]}, {"paths": {}})
    saver.close()
    with claim(folder, CONFIG, resume=True) as found:
        assert found.state == "resume" and found.start_step == 20


def test_operational_keys_do_not_make_another_run(tmp_path):
    folder = RunDir(tmp_path / "run")
    _ran(folder, "running")
    operational = {**CONFIG, "tracking": {"mode": "disabled"}, "cpu_devices": 4,
                   "train": {"steps": 6, "resume": True}}
    with claim(folder, operational, resume=True) as found:
        assert found.state == "restart"
    other = {**CONFIG, "train": {"steps": 7, "resume": True}}
    with pytest.raises(RunDirTaken, match=r"another config \(train.steps: 6 there, 7 now\)"):
        claim(folder, other, resume=True)


def test_a_run_written_before_a_key_existed_is_the_same_run_at_that_keys_default(tmp_path):
    """A run cut before an upgrade added a key (mesh.fsdp) resumes after it; the key set to
    another value than its default is another run."""
    folder = RunDir(tmp_path / "run")
    _ran(folder, "running")  # its resolved config has no mesh.fsdp
    now = {**CONFIG, "mesh": {"fsdp": True}}
    with claim(folder, now, resume=True) as found:
        assert found.state == "restart"
    with pytest.raises(RunDirTaken, match=r"mesh.fsdp: True there, False now"):
        claim(folder, {**CONFIG, "mesh": {"fsdp": False}}, resume=True)


def test_a_cut_run_lists_every_complete_checkpoint_newest_first_whatever_resume_says(tmp_path):
    """train.resume=or_restart resumes like true (it differs only when none restores); a
    finished run is never started again."""
    import jax.numpy as jnp

    folder = RunDir(tmp_path / "run")
    _ran(folder, "running")
    saver = checkpoints.Saver(folder)
    for step in (10, 20):
        saver.save(step, {"trainable": [jnp.ones(3)]}, {"paths": {}})
    saver.close()
    for resume in (True, "or_restart"):
        with claim(folder, CONFIG, resume=resume) as found:
            assert found.state == "resume" and found.start_step == 20
            assert [c.step for c in found.checkpoints] == [20, 10]
    _ran(folder, "finished")
    with claim(folder, CONFIG, resume="or_restart") as found:
        assert found.state == "finished"


def test_a_failure_never_marks_a_finished_run_or_one_a_live_process_holds(tmp_path):
    folder = RunDir(tmp_path / "run")
    _ran(folder, "finished")
    folder.fail(KeyboardInterrupt(), status="interrupted")  # Ctrl-C at start-up, same folder
    assert folder.summary() == {"status": "finished"}
    _ran(folder, "running")
    with claim(folder, CONFIG, resume=True):  # another process runs in it
        folder.fail(ValueError("not mine"))
        assert folder.summary() == {"status": "running"}
    folder.fail(ValueError("mine"))
    assert folder.summary() == {"status": "failed", "error": "mine"}


def test_resume_false_refuses_any_used_folder(tmp_path):
    folder = RunDir(tmp_path / "run")
    _ran(folder, "running")
    with pytest.raises(RunDirTaken, match="train.resume=false"):
        claim(folder, CONFIG, resume=False)


def test_truncate_after_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    folder = RunDir(tmp_path)
    for step in (5, 10, 15):
        append_jsonl(folder / METRICS, {"step": step, "loss": 1.0 / step})
        append_jsonl(folder / THROUGHPUT, {"step": step, "tokens_per_s": 1.0})
    folder.truncate_after(10)
    assert [r["step"] for r in folder.metrics()] == [5, 10]
    assert [r["step"] for r in folder.throughput()] == [5, 10]


def test_fail_never_leaves_a_run_looking_finished(tmp_path):
    folder = RunDir(tmp_path)
    folder.write_summary({"status": "running", "name": "x"})
    folder.fail(ValueError("first line\nsecond line"))
    assert folder.summary() == {"status": "failed", "name": "x", "error": "first line"}
    assert not folder.finished


def test_job_folders_skip_wandb_and_checkpoints(tmp_path):
    for job, status in (("0", "finished"), ("1", "failed")):
        RunDir(tmp_path / job).path.mkdir()
        RunDir(tmp_path / job).write_summary({"status": status})
    (tmp_path / "0" / "wandb" / "x").mkdir(parents=True)
    (tmp_path / "0" / "wandb" / "x" / "summary.json").write_text("{}")
    (tmp_path / "1" / "checkpoints").mkdir()
    (tmp_path / "1" / "checkpoints" / "summary.json").write_text("{}")
    assert {p.name: s["status"] for p, s in job_folders(tmp_path).items()} == \
        {"0": "finished", "1": "failed"}

"""The paper-experiment workflow: -m sweeps whose jobs are isolated and whose failures are
recorded, the report, exact reruns, checkpoints that survive SIGKILL (LoRA runs too), re-launched
sweeps, and the submitit and Optuna plugins."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from runner.rundir import RunDir
from wandb_records import read_records

pytestmark = pytest.mark.slow

FAST = ["train.steps=6", "train.log_every=2", "generate.prompts=[]", "train.save_adapter=false"]


def metrics(run_dir: Path) -> list[dict]:
    return RunDir(run_dir).metrics()


def summary(run_dir: Path) -> dict:
    return RunDir(run_dir).summary()


def overrides(job_dir: Path) -> list[str]:
    return RunDir(job_dir).overrides()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """4 in-process jobs, 2 of which fail (a batch of 7 on a batch axis of 2), and a solo run of
    the third job's config."""
    workdir = tmp_path_factory.mktemp("sweep")
    proc = run_cli("-m", "lora.rank=2,4", "train.batch_size=8,7", *FAST, "hydra.sweep.dir=sweep",
                   cwd=workdir, timeout=900)
    solo = run_cli("lora.rank=4", "train.batch_size=8", *FAST, "hydra.run.dir=solo",
                   cwd=workdir, timeout=600)
    assert solo.returncode == 0, solo.stderr[-3000:]
    return workdir, proc


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(sweep):
    workdir, proc = sweep
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 of 4 jobs finished" in proc.stderr and "Traceback" not in proc.stderr
    jobs = sorted((workdir / "sweep").glob("[0-9]*"), key=lambda p: int(p.name))
    assert len(jobs) == 4
    for job in jobs:
        status = summary(job)
        if "train.batch_size=7" in overrides(job):
            assert status["status"] == "failed"
            assert "train.batch_size=7 does not divide" in status["error"]
            assert f"FAILED {job.name}: failed: train.batch_size=7" in proc.stderr
        else:
            assert status["status"] == "finished" and status["steps"] == 6


def test_a_sweep_job_equals_a_solo_run_of_its_config(sweep):
    """Job 2 ran in the same process after a finished and a failed job: no Keras state leaks."""
    workdir, _ = sweep
    job = workdir / "sweep" / "2"
    assert overrides(job)[:2] == ["lora.rank=4", "train.batch_size=8"]
    assert metrics(job) == metrics(workdir / "solo")


def test_wandb_groups_the_sweep_and_names_each_run_by_its_overrides(sweep):
    workdir, _ = sweep
    for job in ("0", "2"):
        files = list((workdir / "sweep" / job / "wandb").glob("offline-run-*/run-*.wandb"))
        runs = [r.run for r in read_records(files[0]) if r.WhichOneof("record_type") == "run"]
        assert runs[0].run_group == "default-sweep"
        assert runs[0].display_name == ",".join(sorted(overrides(workdir / "sweep" / job)))


def test_report_writes_a_table_csv_markdown_and_a_picture(sweep):
    workdir, _ = sweep
    proc = run_cli("sweep", cwd=workdir, module="runner.report", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = workdir / "sweep"
    with open(folder / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["lora.rank"], r["train.batch_size"], r["status"]) for r in rows] == [
        ("2", "8", "finished"), ("2", "7", "failed"), ("4", "8", "finished"), ("4", "7", "failed")]
    assert float(rows[2]["final_loss"]) == summary(folder / "2")["final_loss"]
    assert float(rows[2]["best_loss"]) == min(m["loss"] for m in metrics(folder / "2"))
    assert "| lora.rank | train.batch_size | status |" in (folder / "report.md").read_text()
    assert "| 2 | 4 | 8 | finished |" in proc.stdout
    png = (folder / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_rerun_from_the_folder_reproduces_the_metrics_exactly(sweep):
    workdir, _ = sweep
    proc = run_cli("solo", "--out", "again", cwd=workdir, module="runner.rerun", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reproduced: metrics.jsonl identical" in proc.stdout
    assert metrics(workdir / "again") == metrics(workdir / "solo")
    env = RunDir(workdir / "again").env()
    assert env["git"]["commit"] and "dirty" in env["git"] and env["process_count"] == 1


def _popen(args, cwd):
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc, path: Path, timeout=600) -> None:
    """SIGKILL `proc` as soon as `path` exists (it must, before the run ends)."""
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


# packed rows (dataset.packing): every cut, resume and sweep below replays packed batches too
CUT = ["train.steps=60", "train.checkpoint_every=10", "train.log_every=5", "generate.prompts=[]",
       "tracking.mode=disabled", "dataset.packing=true"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The CUT experiment run from start to end, which every cut-and-resumed run must equal."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    full = run_cli(*CUT, "hydra.run.dir=full", cwd=workdir, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    return workdir / "full"


def _signal_when_logged(proc, run_dir: Path, step: int, signals, timeout=600,
                        gap=0.2) -> None:
    """Send `signals` (`gap` seconds apart) to `proc` once metrics.jsonl has logged `step`:
    training is under way, between two periodic checkpoints."""
    deadline = time.time() + timeout
    while not any(m["step"] >= step for m in RunDir(run_dir).metrics()):
        assert proc.poll() is None, "the run ended before it could be signalled"
        assert time.time() < deadline, f"step {step} was never logged"
        time.sleep(0.05)
    for number in signals:
        proc.send_signal(number)
        time.sleep(gap)


def test_sigterm_saves_the_step_in_flight_and_the_same_command_resumes_to_identical_metrics(
        workdir, uninterrupted):
    """A scheduler's preemption: the run finishes its step, checkpoints it, says "preempted"
    and exits 143 by itself; the same command resumes from that step."""
    proc = _popen([*CUT, "hydra.run.dir=cut"], workdir)
    _signal_when_logged(proc, workdir / "cut", 25, [signal.SIGTERM])
    assert proc.wait(timeout=120) == 143
    stopped = summary(workdir / "cut")
    assert stopped["status"] == "preempted" and stopped["signal"] == "SIGTERM"
    step = stopped["stopped_at_step"]
    assert 25 <= step < 60 and stopped["checkpoint"].endswith(f"step_{step:08d}")
    assert (workdir / "cut" / "checkpoints" / f"step_{step:08d}" / "state").is_dir()
    resumed = run_cli(*CUT, "hydra.run.dir=cut", cwd=workdir, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = summary(workdir / "cut")
    assert after["status"] == "finished" and after["resumed_from_step"] == step
    assert metrics(workdir / "cut") == metrics(uninterrupted)


def test_ctrl_c_twice_ends_at_once_with_one_line(workdir):
    proc = subprocess.Popen([sys.executable, "-m", "runner", *CUT, "hydra.run.dir=cut"],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={k: v for k, v in os.environ.items()
                                            if k != "HYDRA_FULL_ERROR"})
    # 50 ms apart: the second arrives while the first's step and checkpoint are under way
    _signal_when_logged(proc, workdir / "cut", 15, [signal.SIGINT, signal.SIGINT], gap=0.05)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130
    assert "SIGINT again: stopped at once" in err and "Traceback" not in err
    cut = summary(workdir / "cut")
    assert cut["status"] == "interrupted" and "a second SIGINT" in cut["error"]


def _damage(checkpoint: Path) -> None:
    """Cut the largest file of a checkpoint's arrays short, as a full disk would."""
    data = max((p for p in (checkpoint / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[:64])


def _cut_again(run_dir: Path) -> None:
    """Make a finished run look cut (summary "running"), as a SIGKILL at its end would."""
    RunDir(run_dir).write_summary({**summary(run_dir), "status": "running"})


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
        workdir):
    args = ["train.steps=30", "train.checkpoint_every=10", "train.log_every=5",
            "generate.prompts=[]", "tracking.mode=disabled", "hydra.run.dir=run"]
    first = run_cli(*args, cwd=workdir, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    run, logged = workdir / "run", metrics(workdir / "run")
    _cut_again(run)
    _damage(run / "checkpoints" / "step_00000020")
    again = run_cli(*args, cwd=workdir, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    warning = [ln for ln in (run / "runner.log").read_text().splitlines()
               if "cannot be restored" in ln]
    assert len(warning) == 1 and "step_00000020" in warning[0] and "set aside as" in warning[0]
    assert summary(run)["status"] == "finished" and summary(run)["resumed_from_step"] == 10
    assert metrics(run) == logged
    assert (run / "checkpoints_set_aside" / "step_00000020" / "state").is_dir()  # kept
    # none restores: one line naming the folder and the choice, and nothing is moved
    _cut_again(run)
    for step in (10, 20):
        _damage(run / "checkpoints" / f"step_{step:08d}")
    refused = run_cli(*args, cwd=workdir, timeout=600)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    errors = [ln for ln in refused.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "none of its checkpoints can be restored" in errors[0]
    assert str(run / "checkpoints") in errors[0] and "train.resume=or_restart" in errors[0]
    assert summary(run)["status"] == "failed"
    over = run_cli(*args, "train.resume=or_restart", cwd=workdir, timeout=600)
    assert over.returncode == 0, over.stderr[-3000:]
    assert summary(run)["status"] == "finished" and "resumed_from_step" not in summary(run)
    assert metrics(run) == logged
    assert sorted(p.name for p in (run / "checkpoints_set_aside").iterdir()) == [
        "step_00000010", "step_00000020", "step_00000020-2"]


def test_a_killed_lora_run_resumes_to_the_same_final_loss(workdir, uninterrupted):
    """...also when the resumed command changes operational keys only (tracking, caches)."""
    _kill_when(_popen([*CUT, "hydra.run.dir=cut"], workdir),
               workdir / "cut" / "checkpoints" / "step_00000020")
    assert summary(workdir / "cut")["status"] == "running"  # cut mid-epoch, not finished
    resumed = run_cli(*CUT, "hydra.run.dir=cut", "tracking.mode=offline",
                      "compilation_cache_dir=cache", cwd=workdir, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = summary(workdir / "cut")
    assert after["status"] == "finished" and after["resumed_from_step"] >= 20
    assert after["final_loss"] == summary(uninterrupted)["final_loss"]
    assert metrics(workdir / "cut") == metrics(uninterrupted)  # every logged step, identical
    assert sorted(p.name for p in (workdir / "cut" / "checkpoints").iterdir()) == \
        ["step_00000040", "step_00000050"]  # the last two are kept


def test_a_preempted_sweep_is_recorded_and_its_relaunch_resumes_the_cut_job(workdir):
    """SIGUSR1 (SLURM's warning before a time limit) during job 1 of 3: job 1 checkpoints and
    says "preempted", the sweep exits 138 without starting job 2; the relaunch leaves job 0
    alone, resumes job 1 from its step and runs job 2."""
    args = ["-m", "lora.rank=2,4,8", *CUT, "hydra.sweep.dir=sweep"]
    proc = _popen(args, workdir)
    _signal_when_logged(proc, workdir / "sweep" / "1", 25, [signal.SIGUSR1])
    assert proc.wait(timeout=120) == 138
    first = workdir / "sweep" / "0" / "summary.json"
    assert summary(first.parent)["status"] == "finished"
    cut = summary(workdir / "sweep" / "1")
    assert cut["status"] == "preempted" and cut["signal"] == "SIGUSR1"
    assert not (workdir / "sweep" / "2").exists()
    finished_at = first.stat().st_mtime_ns
    again = run_cli(*args, cwd=workdir, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert first.stat().st_mtime_ns == finished_at  # untouched
    resumed = summary(workdir / "sweep" / "1")
    assert resumed["status"] == "finished"
    assert resumed["resumed_from_step"] == cut["stopped_at_step"]
    assert [m["step"] for m in metrics(workdir / "sweep" / "1")] == list(range(5, 61, 5))
    assert summary(workdir / "sweep" / "2")["status"] == "finished"


def test_submitit_runs_each_job_as_its_own_process(workdir):
    proc = run_cli("-m", "hydra/launcher=submitit_local", "lora.rank=2,4", *FAST,
                   "tracking.mode=disabled", "hydra.sweep.dir=sweep", cwd=workdir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [workdir / "sweep" / n for n in ("0", "1")]
    assert all(summary(j)["status"] == "finished" for j in jobs)
    pids = {RunDir(j).env()["pid"] for j in jobs}
    assert len(pids) == 2


def test_optuna_sweeper_searches_with_a_database(workdir):
    proc = run_cli("-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2",
                   "hydra.sweeper.sampler.seed=0", "hydra.sweeper.storage=sqlite:///study.db",
                   "hydra.sweeper.study_name=lr", "optimizer.learning_rate=tag(log,interval(1e-4,1e-2))",
                   *FAST, "tracking.mode=disabled", "hydra.sweep.dir=sweep",
                   cwd=workdir, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((workdir / "sweep" / "optimization_results.yaml").read_text())
    losses = [summary(workdir / "sweep" / n)["final_loss"] for n in ("0", "1")]
    assert result["best_value"] == pytest.approx(min(losses))
    assert (workdir / "study.db").stat().st_size > 0


def test_slurm_launcher_config_composes(workdir):
    proc = run_cli("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra",
                   "-p", "hydra.launcher", cwd=workdir, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = yaml.safe_load(proc.stdout)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["tasks_per_node"] == 1

"""A preference run end to end (experiment=dpo_tiny): DPO starts where the policy is the reference
(loss log 2), learns the held-out preference, logs TRL's names to metrics.jsonl and W&B, and a
preempted run resumes to identical metrics."""

import math
import signal

import pytest

from conftest import run_cli
from runner.rundir import RunDir
from test_sweeps_and_resume import _popen, _signal_when_logged
from wandb_records import history

RUN = ["experiment=dpo_tiny", "train.steps=12", "train.log_every=1", "train.eval_every=6",
       "train.checkpoint_every=4", "generate.prompts=[]"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dpo")
    proc = run_cli(*RUN, "tracking.mode=offline", "hydra.run.dir=full", cwd=workdir,
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return RunDir(workdir / "full")


def test_dpo_starts_at_the_reference_and_learns_the_held_out_preference(uninterrupted):
    records = uninterrupted.metrics()
    train = [r for r in records if "rewards/accuracies" in r]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in train] == list(range(1, 13))
    # step 1: the adapter is zero, so the policy is the reference (the adapter switched off)
    assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(train[0]["rewards/margins"]) < 1e-5
    assert train[-1]["loss"] < 0.6 and train[-1]["rewards/margins"] > 0.1
    assert [r["step"] for r in evals] == [6, 12]
    assert evals[-1]["eval_rewards/accuracies"] >= 0.9
    assert evals[-1]["eval_rewards/margins"] > evals[0]["eval_rewards/margins"] > 0
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] < math.log(2)
    summary = uninterrupted.summary()
    assert summary["first_loss"] == train[0]["loss"] and summary["final_loss"] == train[-1]["loss"]
    assert summary["best_eval_loss"] == evals[-1]["eval_loss"]


def test_wandb_holds_the_same_metrics_under_trls_names(uninterrupted):
    files = list((uninterrupted.path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    rows = history(files[0])
    logged = {key for row in rows for key in row}
    for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
                 "rewards/margins", "logps/chosen", "logps/rejected", "eval_loss",
                 "eval_rewards/accuracies", "eval_rewards/margins"):
        assert name in logged, name
    by_step = {row["_step"]: row for row in rows if "rewards/margins" in row}
    for record in uninterrupted.metrics():
        if "rewards/margins" in record:
            assert by_step[record["step"]]["rewards/margins"] == pytest.approx(
                record["rewards/margins"])


def test_a_preempted_dpo_run_resumes_to_identical_metrics(uninterrupted, workdir):
    proc = _popen([*RUN, "tracking.mode=disabled", "hydra.run.dir=cut"], workdir)
    _signal_when_logged(proc, workdir / "cut", 5, [signal.SIGTERM])
    assert proc.wait(timeout=120) == 143
    cut = RunDir(workdir / "cut")
    step = cut.summary()["stopped_at_step"]
    assert 5 <= step < 12
    resumed = run_cli(*RUN, "tracking.mode=disabled", "hydra.run.dir=cut", cwd=workdir,
                      timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert cut.summary()["resumed_from_step"] == step
    assert cut.metrics() == uninterrupted.metrics()

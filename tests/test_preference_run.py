"""A preference run end to end (experiment=dpo_tiny): DPO starts where the policy is the reference
(loss log 2), learns the held-out preference, logs TRL's names to metrics.jsonl and W&B, and a
preempted run resumes to identical metrics; a full fine-tune measures against a frozen copy of
its starting weights."""

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


# Full fine-tuning DPO: the reference is a frozen copy of the starting weights
# (runner/reference_model.py), rebuilt from them when a run resumes.
FULL = ["experiment=dpo_tiny", "lora=none", "optimizer.learning_rate=1e-4", "train.steps=8",
        "train.log_every=1", "train.eval_every=2", "train.checkpoint_every=2",
        "generate.prompts=[]", "tracking.mode=disabled", "hydra.run.dir=full_ft"]


def _implied_reference(record: dict, beta: float) -> float:
    """The reference's mean summed log-probability of the chosen answers that an eval record
    implies: rewards/chosen = beta x (policy's - reference's)."""
    return record["eval_logps/chosen"] - record["eval_rewards/chosen"] / beta


def test_a_full_fine_tune_measures_against_a_frozen_copy_of_its_start_even_after_a_resume(
        workdir):
    proc = _popen(FULL, workdir)
    _signal_when_logged(proc, workdir / "full_ft", 3, [signal.SIGTERM])
    assert proc.wait(timeout=120) == 143
    resumed = run_cli(*FULL, cwd=workdir, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = RunDir(workdir / "full_ft")
    summary = run.summary()
    assert 3 <= summary["resumed_from_step"] < 8
    records = run.metrics()
    train = [r for r in records if "rewards/margins" in r]
    evals = [r for r in records if "eval_loss" in r]
    # step 1: the policy is its starting weights, which the reference is a copy of
    assert train[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert train[-1]["loss"] < 0.5  # the reference stayed behind as the policy moved
    assert [r["step"] for r in evals] == [2, 4, 6, 8]
    # the same held-out pairs every time: the reference they imply never moves, across the
    # resume too (rebuilt from the preset, not from the checkpointed policy), while the
    # policy's own log-probabilities do
    implied = [_implied_reference(r, 0.1) for r in evals]
    assert implied == pytest.approx([implied[0]] * 4, rel=1e-5, abs=1e-3)
    assert abs(evals[-1]["eval_logps/chosen"] - evals[0]["eval_logps/chosen"]) > 1.0
    # the plan: every weight again under reference/, sharded like the policy, not counted
    # among the model's parameters
    rows = [line.split("\t") for line in (run.path / "sharding.tsv").read_text().splitlines()]
    rows = {r[0]: r for r in rows[1:]}
    policy = {path: r for path, r in rows.items() if r[1] == "weight"}
    copies = {path: r for path, r in rows.items() if r[1] == "reference"}
    assert set(copies) == {f"reference/{path}" for path in policy}
    assert all(copies[f"reference/{p}"][2:5] == r[2:5] for p, r in policy.items())
    assert any(r[4] != "(None)" and "model" in r[4] for r in copies.values())  # split, not whole
    assert summary["total_params"] == summary["trainable_params"] == sum(
        math.prod(int(n) for n in r[2].split("x")) for r in policy.values())

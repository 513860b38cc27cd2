"""The default experiment end to end (short form), through the real CLI, checked by what it
leaves behind: the run folder of the outputs contract and a real W&B offline run."""

import csv
import json

import pytest

from conftest import run_cli
from runner.rundir import RunDir
from wandb_records import history, read_records

pytestmark = pytest.mark.slow

STEPS = 40


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("default")
    proc = run_cli(f"train.steps={STEPS}", "train.log_every=5", "hydra.run.dir=run",
                   cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir / "run", proc


def test_outputs_contract(default_run):
    run_dir, _ = default_run
    for name in ["resolved_config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml",
                 "env.json", "metrics.jsonl", "sharding.tsv", "summary.json", "samples.jsonl",
                 "runner.log"]:
        assert (run_dir / name).is_file(), name
    resolved = RunDir(run_dir).resolved_config()
    assert resolved["train"]["steps"] == STEPS and resolved["mesh"]["shape"] == [2, 4]
    assert "${" not in (run_dir / "resolved_config.yaml").read_text()  # interpolations resolved
    env = RunDir(run_dir).env()
    assert len(env["devices"]) == 8 and env["mesh"] == {"batch": 2, "model": 4}
    assert env["packages"]["keras"] and env["packages"]["keras-hub"]
    assert env["process_count"] == 1 and "commit" in env["git"]


def test_loss_falls_and_is_logged_every_interval(default_run):
    run_dir, _ = default_run
    rows = RunDir(run_dir).metrics()
    assert [r["step"] for r in rows] == list(range(5, STEPS + 1, 5))
    assert all(r["learning_rate"] == pytest.approx(2e-3) for r in rows)
    timing = RunDir(run_dir).throughput()
    assert [t["step"] for t in timing] == [r["step"] for r in rows]
    assert all(t["tokens_per_s"] > 0 and t["step_time_s"] > 0 and t["model_flops_per_s"] > 0
               for t in timing)
    summary = RunDir(run_dir).summary()
    assert 0 < summary["mfu"] < 1 and summary["peak_flops"] > summary["model_flops_per_s"]
    positions_per_s = summary["tokens_per_step"] / summary["step_time_s"]
    # tokens/s counts real tokens; a 64-position window holds ~40 of them, the rest is padding
    assert 0.3 * positions_per_s < summary["tokens_per_s"] < positions_per_s
    assert summary["first_step_at"] > 0
    # reviews average ~40 real tokens of the 64-token window: padding is not counted
    assert all(0 < r["tokens"] / 5 < 8 * 64 for r in rows)
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last < first - 0.3, (first, last)
    summary = RunDir(run_dir).summary()
    assert summary["status"] == "finished" and summary["steps"] == STEPS
    assert summary["final_loss"] == pytest.approx(last)
    assert 0 < summary["trainable_params"] < summary["total_params"] / 10  # LoRA only


def test_each_record_is_the_token_weighted_mean_of_its_interval(default_run, tmp_path):
    """The same run logged every step gives each step's own loss, accuracy and tokens; every
    5-step record of the default run is their token-weighted mean over those 5 steps, its
    step_loss the last step's loss, and the summary's losses are records' losses."""
    proc = run_cli("train.steps=10", "train.log_every=1", "generate.prompts=[]",
                   "tracking.mode=disabled", "hydra.run.dir=each", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = RunDir(tmp_path / "each").metrics()
    assert [r["step"] for r in steps] == list(range(1, 11))
    rows = RunDir(default_run[0]).metrics()
    for row, interval in zip(rows[:2], (steps[:5], steps[5:10])):
        tokens = sum(r["tokens"] for r in interval)
        assert row["tokens"] == tokens
        assert row["loss"] == pytest.approx(
            sum(r["loss"] * r["tokens"] for r in interval) / tokens, rel=1e-6)
        assert row["accuracy"] == pytest.approx(
            sum(r["accuracy"] * r["tokens"] for r in interval) / tokens, rel=1e-6)
        assert row["step_loss"] == pytest.approx(interval[-1]["loss"], rel=1e-6)
        assert row["loss"] != pytest.approx(row["step_loss"], rel=1e-4)  # not the last batch
    summary = RunDir(default_run[0]).summary()
    losses = [r["loss"] for r in rows]
    assert (summary["first_loss"], summary["final_loss"], summary["best_loss"]) == (
        losses[0], losses[-1], min(losses))


def test_sharding_tsv_splits_weights_on_the_model_axis(default_run):
    run_dir, _ = default_run
    with open(run_dir / "sharding.tsv") as f:
        rows = {r["path"]: r for r in csv.DictReader(f, delimiter="\t")}
    emb = rows["token_embedding/embeddings"]
    assert emb["spec"] == "(model, batch)" and int(emb["bytes_per_device"]) == 512 * 128 * 4 // 8
    assert rows["decoder_block_0/attention/query/kernel"]["spec"] == "(model, batch, None)"
    assert rows["decoder_block_0/attention/query/lora_kernel_a"]["kind"] == "lora"
    slots = [p for p, r in rows.items() if r["kind"] == "optimizer"]
    assert "adamw/decoder_block_0_attention_query_lora_kernel_a_momentum" in slots


def test_wandb_offline_run_holds_the_same_numbers(default_run):
    run_dir, _ = default_run
    files = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    logged = [h for h in history(files[0]) if "loss" in h]
    local = RunDir(run_dir).metrics()
    assert [h["_step"] for h in logged] == [r["step"] for r in local]
    assert [h["loss"] for h in logged] == pytest.approx([r["loss"] for r in local])
    logged_tables = {k.split("/")[0] for h in history(files[0]) for k, v in h.items()
                     if k.endswith("/_type") and v == "table-file"}
    assert logged_tables == {"sharding", "samples"}
    media = files[0].parent / "files" / "media" / "table"
    sharding = json.loads(next(media.glob("sharding_*.table.json")).read_text())
    with open(run_dir / "sharding.tsv") as f:
        tsv = [line.rstrip("\n").split("\t") for line in f]
    assert sharding["columns"] == tsv[0]
    assert [[str(c) for c in row] for row in sharding["data"]] == tsv[1:]
    samples = json.loads(next(media.glob("samples_*.table.json")).read_text())
    assert samples["columns"] == ["prompt", "before", "after"] and len(samples["data"]) == 3
    records = read_records(files[0])
    # the config travels in the run record (and in config records for later updates)
    keys = {item.key for r in records if r.WhichOneof("record_type") == "run"
            for item in r.run.config.update}
    keys |= {item.key for r in records if r.WhichOneof("record_type") == "config"
             for item in r.config.update}
    assert {"model", "mesh", "layout", "lora", "optimizer", "train"} <= keys
    summary = [r for r in records if r.WhichOneof("record_type") == "summary"]
    assert any(item.key == "trainable_params" for r in summary for item in r.summary.update)


def test_samples_before_and_after(default_run):
    run_dir, _ = default_run
    rows = RunDir(run_dir).samples()
    assert [r["prompt"] for r in rows] == ["The film", "I watched", "The river"]
    assert all(r["before"].startswith(r["prompt"]) for r in rows)
    assert any(r["before"] != r["after"] for r in rows)  # training changed what the model says


def test_overrides_change_the_run_and_secrets_stay_out(workdir):
    """`optimizer.learning_rate=1e-3 lora=none mesh=1x8` trains every weight on a 1 x 8 mesh;
    a W&B key in the environment appears in no file of the run."""
    secret = "test-secret-0123456789abcdef0123456789abcdef"
    proc = run_cli("optimizer.learning_rate=1e-3", "lora=none", "mesh=1x8", "train.steps=3",
                   "generate.prompts=[]", "hydra.run.dir=run", "compilation_cache_dir=cache",
                   cwd=workdir, timeout=600, env={"WANDB_API_KEY": secret})
    assert proc.returncode == 0, proc.stderr[-5000:]
    run_dir = workdir / "run"
    summary = RunDir(run_dir).summary()
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert summary["trainable_params"] == summary["total_params"]  # lora=none
    rows = RunDir(run_dir).metrics()
    assert rows[-1]["learning_rate"] == pytest.approx(1e-3)
    env = RunDir(run_dir).env()
    assert env["mesh"] == {"batch": 1, "model": 8}
    assert any((workdir / "cache").iterdir())  # compilation_cache_dir: compiled steps kept
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path

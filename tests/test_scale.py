"""Ready for real scale: random-weight architectures, the synthetic token stream, remat, XLA's
compiled memory beside the estimate, and the GPU benchmark's code path on CPU with TensorFlow,
TFDS and W&B unimportable (as on the GPU machines it is for)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import compose, hide_packages, run_cli, with_path

# What a random-weight run on synthetic tokens (and the GPU benchmark) must do without.
SCALE_FREE = ("tensorflow", "tensorflow_datasets", "tensorflow_text", "wandb")

ROOT = Path(__file__).resolve().parent.parent
# Imported by every Python process whose PYTHONPATH starts with its folder: TensorFlow, TFDS
# and W&B are then not found (as where they are not installed), and the process leaves a mark.
def test_synthetic_batches_are_a_function_of_seed_and_step():
    from runner.datasets import synthetic

    x, y, w = synthetic.batch(3, 7, 4, 16, 100)
    again, _, _ = synthetic.batch(3, 7, 4, 16, 100)
    other, _, _ = synthetic.batch(3, 8, 4, 16, 100)
    assert x["token_ids"].shape == (4, 16) and y.shape == (4, 16) and w.shape == (4, 16)
    assert np.array_equal(x["token_ids"], again["token_ids"])
    assert not np.array_equal(x["token_ids"], other["token_ids"])
    assert np.array_equal(x["token_ids"][:, 1:], y[:, :-1])  # targets are the next tokens
    assert x["token_ids"].min() >= 1 and x["token_ids"].max() < 100 and x["padding_mask"].all()
    rows, _, _ = synthetic.batch(3, 7, 4, 16, 100, slice(2, 4))  # process 1 of 2
    assert np.array_equal(rows["token_ids"], x["token_ids"][2:])


def test_random_weights_need_no_preset_and_take_the_shipped_tokenizer_where_it_is_absent():
    """qwen3_0.6b_en's preset cannot be had here: a plan-only model file. With random weights
    the check stage lets it train, and its tokenizer is the shipped one."""
    from runner import checks, model

    cfg = compose("model=qwen3_0.6b_en", "model.weights=random", "dataset=synthetic",
                  "train.steps=2", "generate.prompts=[]")
    assert checks.run_checks(cfg, 8).problems == []
    preset = compose("model=qwen3_0.6b_en", "dataset=synthetic", "train.steps=2",
                     "generate.prompts=[]")
    assert any("qwen3_0.6b_en" in p for p in checks.run_checks(preset, 8).problems)
    preprocessor = model.load_preprocessor(cfg.model)
    assert preprocessor.tokenizer.vocabulary_size() < 151936


@pytest.mark.parametrize("overrides, words", [
    (["dataset=synthetic"], "set train.steps"),
    (["dataset=synthetic", "train.steps=2", "dataset.eval_split=validation"],
     "dataset.eval_split=null"),
    (["model.weights=random", "train.export_hf=true"], "the random base is not saved"),
])
def test_what_synthetic_data_and_random_weights_cannot_do_is_one_line(overrides, words):
    from runner import checks

    problems = checks.run_checks(compose(*overrides), 8).problems
    assert any(words in p for p in problems), problems


def test_compiled_memory_is_near_the_estimate_and_remat_lowers_it():
    """The tiny model's real train step compiled for the 2 x 4 mesh: XLA's peak per device
    within a factor 2 of the estimate, and train.remat=blocks needs fewer temporaries."""
    from runner.plan.assemble import estimate_memory, make_plan
    from runner.plan.compiled import compile_train_step

    found = {}
    for remat in ("none", "blocks"):
        cfg = compose(f"train.remat={remat}", "train.batch_size=16", "train.sequence_length=128")
        the_plan, rules = make_plan(cfg, 8)
        estimate = estimate_memory(cfg, the_plan)
        found[remat] = compile_train_step(cfg, the_plan, 8), estimate
    compiled, estimate = found["none"]
    assert 0.5 < estimate.total / compiled.peak < 2.0
    assert compiled.aliased > 0  # the state is donated: updated in place
    assert found["blocks"][0].temporaries < compiled.temporaries
    assert found["blocks"][1].activations < estimate.activations


@pytest.mark.slow
def test_plan_compile_prints_xla_memory_beside_the_estimate(workdir):
    proc = run_cli("--compile", "--json", "plan.json", module="runner.plan", cwd=workdir,
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Compiled train step, memory analysis per device by XLA:CPU" in proc.stdout
    compiled = json.loads((workdir / "plan.json").read_text())["compiled"]
    assert compiled["peak"] == (compiled["arguments"] + compiled["outputs"] - compiled["aliased"]
                                + compiled["temporaries"] + compiled["generated_code"]) > 0
    assert compiled["compiler"].startswith("XLA:CPU")
    mismatch = run_cli("--compile", "mesh=2x8", "plan.accelerator=h100-80gb",
                       module="runner.plan", cwd=workdir, timeout=600)  # 16 devices; 8 here
    assert mismatch.returncode == 2 and "cpu_devices=16" in mismatch.stderr


@pytest.mark.slow
def test_a_random_weight_synthetic_run_imports_no_tensorflow_tfds_or_wandb(workdir):
    blocker = hide_packages(workdir / "blocker", SCALE_FREE)
    env = {"PYTHONPATH": with_path(blocker)}
    args = ["dataset=synthetic", "model.weights=random", "train.steps=6", "train.log_every=2",
            "train.remat=blocks", "tracking.mode=disabled", "generate.prompts=[]",
            "train.checkpoint_every=3"]
    runs = [run_cli(*args, f"hydra.run.dir={d}", cwd=workdir, env=env, timeout=600)
            for d in ("a", "b")]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-3000:]
    assert len(list(blocker.glob("started-*"))) == 2  # the blocker was in both processes
    metrics = [(workdir / d / "metrics.jsonl").read_text() for d in ("a", "b")]
    assert metrics[0] == metrics[1]  # seeded: same weights, same tokens, same numbers
    losses = [json.loads(line)["loss"] for line in metrics[0].splitlines()]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    summary = json.loads((workdir / "a" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["peak_host_rss_bytes"] > 0
    assert (workdir / "a" / "checkpoints" / "step_00000003").is_dir()


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end_on_cpu_in_its_tiny_form(workdir):
    blocker = hide_packages(workdir / "blocker", SCALE_FREE)
    import subprocess

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny",
                           "--out", "table.md"], cwd=workdir, capture_output=True, text=True,
                          timeout=900, env={**_env(), "PYTHONPATH": with_path(blocker)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(blocker.glob("started-*"))) >= 4  # gpu.py, runner, keras, jax
    rows = [line for line in (workdir / "table.md").read_text().splitlines()
            if line.startswith("| tiny_gemma |")]
    assert [r.split("|")[2].strip() for r in rows] == ["runner", "keras", "jax"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        assert float(cells[3].split()[0].replace(",", "")) > 0  # step time, ms
        assert float(cells[5].rstrip("%")) > 0  # MFU


def _env():
    import os

    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the tiny form runs on one CPU device
    return env

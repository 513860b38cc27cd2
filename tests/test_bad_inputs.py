"""Every mistake a user can make on the command line fails before training: one `error:` line
naming the key (or variable) and the fix, no stack trace, exit code 2 (for what Hydra rejects at
compose time too), and no run folder that looks finished."""

import pytest

from conftest import run_cli
from runner.rundir import METRICS, RunDir

pytestmark = pytest.mark.slow

# (id, overrides, words the one error line must contain): refused before any folder is made,
# what Hydra rejects at compose time and values outside their domain alike.
HYDRA_ERRORS = [
    ("typo_key", ["optimizer.learnin_rate=1e-3"],
     ["optimizer.learnin_rate is not a key", "did you mean optimizer.learning_rate?"]),
    ("added_key", ["+optimizer.learnin_rate=1e-3"],  # what Hydra's own hint used to suggest
     ["optimizer.learnin_rate is not a key", "did you mean optimizer.learning_rate?"]),
    ("force_added_key", ["++optimizer.gradient_accumulation_steps=4"],
     ["optimizer.gradient_accumulation_steps is not a key"]),
    ("sweep_added_key", ["-m", "+optimizer.learnin_rate=1e-3,2e-3"],
     ["optimizer.learnin_rate is not a key", "did you mean optimizer.learning_rate?"]),
    ("wrong_type", ["train.batch_size=eight"], ["batch_size", "eight"]),
    ("unknown_group_option", ["mesh=3x3"], ["mesh", "3x3", "2x4"]),
    ("bad_enum", ["tracking.mode=sometimes"], ["mode", "offline", "online", "disabled"]),
    ("zero_batch", ["train.batch_size=0"], ["train.batch_size=0 must be an integer >= 1"]),
    ("negative_learning_rate", ["optimizer.learning_rate=-0.1"],
     ["optimizer.learning_rate=-0.1 must be a number > 0"]),
    ("zero_devices", ["cpu_devices=0"], ["cpu_devices=0 must be an integer >= 1"]),
    ("impossible_run_dir", ["hydra.run.dir=/proc/runner-test/run"],
     ["hydra.run.dir=/proc/runner-test/run cannot be created", "choose another hydra.run.dir"]),
    ("run_dir_is_a_file", ["hydra.run.dir=a_file"],
     ["hydra.run.dir=a_file is a file, not a folder"]),
    ("malformed_rule", ["layout=gemma_model_parallel", "+layout.rules.extra={patern:x,axes:[model]}"],
     ["layout.rules.extra must have exactly the keys pattern and axes", "patern"]),
    ("sweep_dir_is_a_file", ["-m", "lora.rank=2,4", "hydra.sweep.dir=a_file"],
     ["hydra.sweep.dir=a_file is a file, not a folder"]),
]

RUNNER_ERRORS = [
    ("mesh_vs_devices", ["mesh.shape=[4,4]"], ["mesh.shape=[4, 4] needs 16 devices but 8"]),
    ("rule_matches_nothing",
     ["layout=gemma_model_parallel", "layout.rules.embedding.pattern=token_embeddings/embeddings"],
     ["layout.rules.embedding", "matches no variable"]),
    ("spec_rank", ["layout=gemma_model_parallel", "layout.rules.embedding.axes=[model]"],
     ["layout.rules.embedding gives 1 axes", "token_embedding/embeddings", "2 dimensions"]),
    ("not_divisible",
     ["layout=gemma_model_parallel", "mesh=1x8",
      "+layout.rules.lora_a={pattern:'.*lora_kernel_a',axes:[null,null,model]}"],
     ["lora_kernel_a (4 variables) dimension 2 (size 4) does not divide by mesh axis 'model' (size 8)",
      "layout.rules.lora_a"]),
    ("batch_vs_batch_axis", ["train.batch_size=7"], ["train.batch_size=7", "multiple of 2"]),
    ("unknown_preset", ["model.preset=gemma_9000_en"], ["model.preset=gemma_9000_en"]),
    ("offline_preset", ["model.preset=gemma_2b_en"], ["model.preset=gemma_2b_en", "offline"]),
    ("offline_hf_preset", ["model.preset=hf://google/gemma-2b"],
     ["model.preset=hf://google/gemma-2b", "cannot be reached"]),
    ("lora_targets", ["lora.targets=[nonexistent_layer]"], ["lora.targets", "match no layer"]),
    ("online_without_key", ["tracking.mode=online"],
     ["tracking.mode=online needs a W&B API key", "tracking.mode=offline"]),
    ("architecture_mismatch", ["model.architecture.num_layers=3"],
     ["model.architecture.num_layers=3 but preset tiny_gemma has 4"]),
    ("offline_hf_dataset", ["dataset=dolly"], ["dataset.name=huggingface:", "cannot be reached"]),
    ("offline_dataset", ["dataset.name=imdb_reviews"], ["dataset.name=imdb_reviews", "offline"]),
    ("missing_split", ["dataset.split=nope"],
     ["dataset.split='nope' is not a split of tiny_reviews", "splits: ['train', 'validation']"]),
    ("missing_feature", ["dataset.text_field=body"],
     ["dataset.text_field=body is not a feature of tiny_reviews"]),
    ("merged_preset_from_quantized", ["quant=int8", "mesh=data_parallel",
                                      "train.save_merged_preset=true"],
     ["train.save_merged_preset needs LoRA on a base that is not quantized"]),
]


def _check_one_clear_line(proc, words):
    err = proc.stderr.strip()
    assert "Traceback" not in err, err
    assert all(w in err for w in words), err


@pytest.mark.parametrize("overrides,words", [c[1:] for c in HYDRA_ERRORS],
                         ids=[c[0] for c in HYDRA_ERRORS])
def test_compose_time_errors(workdir, overrides, words):
    (workdir / "a_file").write_text("a user's file, never to be replaced\n")
    proc = run_cli(*overrides, cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    _check_one_clear_line(proc, words)
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == \
        [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]  # one line, no more
    assert not (workdir / "outputs").exists()  # rejected before any run folder exists
    assert (workdir / "a_file").read_text() == "a user's file, never to be replaced\n"


@pytest.mark.parametrize("overrides,words", [c[1:] for c in RUNNER_ERRORS],
                         ids=[c[0] for c in RUNNER_ERRORS])
def test_runner_checks(workdir, overrides, words):
    proc = run_cli(*overrides, "hydra.run.dir=run", cwd=workdir, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    _check_one_clear_line(proc, words)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    # TensorFlow, absl and CUDA probes print nothing before it (runner.noise)
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == lines, proc.stderr
    run_dir = workdir / "run"
    summary = RunDir(run_dir).summary()
    assert summary["status"] == "failed" and summary["error"] in lines[0]
    assert not (run_dir / METRICS).exists()
    assert not (run_dir / "wandb").exists()


@pytest.mark.parametrize("quant", ["none", "nf4"])
def test_a_damaged_local_preset_is_one_line_naming_its_files_not_the_network(workdir, quant):
    """A local preset folder whose weights file is cut short: one line saying the folder's files
    are at fault (no hint to download for an offline machine), exit 2, on the float path and on
    the 4-bit path's layer-by-layer reading (runner/nf4_loading.py) alike."""
    import shutil

    from runner.presets import SHIPPED_PRESETS

    preset = workdir / "damaged_preset"
    shutil.copytree(SHIPPED_PRESETS / "tiny_gemma", preset)
    weights = preset / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    proc = run_cli(f"model.preset={preset}", f"quant={quant}", "lora=rank4",
                   "hydra.run.dir=run", cwd=workdir, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    _check_one_clear_line(proc, [f"model.preset={preset}", "damaged", "again"])
    assert "offline" not in lines[0]
    assert RunDir(workdir / "run").summary()["status"] == "failed"
    assert not (workdir / "run" / METRICS).exists()


def test_full_error_shows_the_stack_trace(workdir):
    proc = run_cli("train.batch_size=7", "hydra.run.dir=run", cwd=workdir,
                   env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "UserError" in proc.stderr


def test_a_used_run_folder_is_never_overwritten(workdir):
    """A finished run is left as it is (exit 0, nothing to do); a folder holding another config's
    run is refused; with train.resume=false any used folder is refused."""
    run_dir = workdir / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text('{"status": "finished"}')
    done = run_cli("hydra.run.dir=run", cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in run_dir.iterdir() if p.name != ".lock") == [
        ".hydra", "runner.log", "summary.json"]  # Hydra's own files; ours untouched
    refused = run_cli("hydra.run.dir=run", "train.resume=false", cwd=workdir)
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    (run_dir / "resolved_config.yaml").write_text("name: another\n")
    other = run_cli("hydra.run.dir=run", cwd=workdir)
    assert other.returncode == 2 and "holds a run of another config" in other.stderr
    assert RunDir(run_dir).summary() == {"status": "finished"}
    assert (run_dir / "resolved_config.yaml").read_text() == "name: another\n"

@pytest.mark.parametrize("module,args,words", [
    ("runner.plan", ["+optimizer.learnin_rate=1"], "optimizer.learnin_rate is not a key"),
    ("runner.export", ["no_run"], "not a run folder"),
    ("runner.generate", ["no_run"], "not a run folder"),
    ("runner.rerun", ["no_run"], "not a run folder"),
    ("runner.report", ["no_run"], "is not a folder"),
])
def test_every_command_ends_a_mistake_with_its_error_line_alone(workdir, module, args, words):
    proc = run_cli(*args, cwd=workdir, module=module, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr

"""Hugging Face folders as users have them: what transformers writes (single file or sharded)
passes the check and trains from the base install (no torch, no transformers), and every
damaged or mismatched folder is one line naming the file and the fix, before any weight loads.
The tensor table that makes this (and the export) work without torch is checked against the
model transformers itself builds."""

import json
import shutil
from pathlib import Path

import pytest

import hf_checkpoints
from conftest import compose, hide_packages, run_cli, with_path
from runner.errors import UserError
from runner.rundir import METRICS, RunDir

# What only the extras bring (measured: `pip list` of a fresh `pip install -e .` against one of
# `pip install -e ".[test]"`): a base install has none of them.
EXTRAS_ONLY = ("torch", "transformers", "peft", "datasets", "accelerate", "pandas", "optax",
               "submitit", "optuna", "sqlalchemy", "sympy")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A Llama checkpoint as one file and the same model in shards, by save_pretrained."""
    import transformers

    root = tmp_path_factory.mktemp("hf_files")
    single = hf_checkpoints.make("llama", root / "single")
    sharded = root / "sharded"
    model = transformers.AutoModelForCausalLM.from_pretrained(str(single))
    model.save_pretrained(str(sharded), max_shard_size="100KB")
    for name in single.iterdir():
        if name.name.startswith("tokenizer"):
            shutil.copy2(name, sharded / name.name)
    return {"single": single, "sharded": sharded}


def _copy(source: Path, to: Path) -> Path:
    shutil.copytree(source, to)
    return to


def _problem(folder: Path):
    """The check stage's verdict on model.preset=<folder>: None, or its one line."""
    from runner.checks import _preset

    cfg = compose(f"model.preset={folder}")
    try:
        _preset(cfg.model, True)
    except UserError as exc:
        return str(exc)
    return None


def _damage(kind: str, folders, tmp_path) -> tuple[Path, str]:
    """A folder damaged as `kind`, and the file its error must name."""
    if kind in ("shard_missing", "shard_truncated", "index_damaged", "index_lies"):
        folder = _copy(folders["sharded"], tmp_path / kind)
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        if kind == "shard_missing":
            (folder / shards[-1]).unlink()
            return folder, shards[-1]
        if kind == "shard_truncated":
            data = (folder / shards[0]).read_bytes()
            (folder / shards[0]).write_bytes(data[: len(data) // 2])
            return folder, shards[0]
        if kind == "index_damaged":
            (folder / "model.safetensors.index.json").write_text('{"weight_map": {"a": ')
            return folder, "model.safetensors.index.json"
        key = "model.layers.0.mlp.up_proj.weight"  # index_lies: placed in a shard without it
        wrong = next(s for s in shards if s != index["weight_map"][key])
        index["weight_map"][key] = wrong
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        return folder, wrong
    folder = _copy(folders["single"], tmp_path / kind)
    weights = folder / "model.safetensors"
    config = json.loads((folder / "config.json").read_text())
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:-1000])
    elif kind == "not_safetensors":
        weights.write_bytes(b"<html>404 Not Found</html>" + bytes(200))
    elif kind == "bin_only":
        weights.unlink()
        (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 a torch zip archive")
        return folder, "pytorch_model.bin"
    elif kind == "no_weights":
        weights.unlink()
        return folder, "model.safetensors"
    elif kind == "more_layers":  # config.json of a deeper model than its weights
        (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
        return folder, "model.layers.2."
    elif kind == "wider_mlp":
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    elif kind == "config_lacks_a_field":
        del config["hidden_size"]
        (folder / "config.json").write_text(json.dumps(config))
        return folder, "config.json"
    return folder, "model.safetensors"


DAMAGE = {
    "shard_missing": ["is missing", "model.safetensors.index.json names", "download"],
    "shard_truncated": ["truncated", "download"],
    "index_damaged": ["cannot be read", "damaged"],
    "index_lies": ["does not hold model.layers.0.mlp.up_proj.weight", "damaged"],
    "truncated": ["truncated (", "bytes", "download"],
    "not_safetensors": ["not a readable safetensors file", "download"],
    "bin_only": ["PyTorch weights only", "save_pretrained"],
    "no_weights": ["holds no weights"],
    "more_layers": ["no weight file holds model.layers.2.", "num_hidden_layers=3",
                    "config.json and the weights disagree"],
    "wider_mlp": ["model.layers.0.mlp.gate_proj.weight has shape [128, 64]",
                  "gives it [96, 64]", "config.json and the weights disagree"],
    "config_lacks_a_field": ["has no 'hidden_size' field"],
}


@pytest.mark.slow  # torch and transformers write the folders in-process
def test_folders_transformers_writes_pass_the_check(folders):
    assert _problem(folders["single"]) is None
    assert _problem(folders["sharded"]) is None
    assert len(list(folders["sharded"].glob("model-*.safetensors"))) > 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_damaged_or_mismatched_folder_is_one_line_naming_the_file(folders, tmp_path,
                                                                        kind):
    folder, named = _damage(kind, folders, tmp_path)
    problem = _problem(folder)
    assert problem is not None and "\n" not in problem
    assert named in problem, problem
    for words in DAMAGE[kind]:
        assert words in problem, problem


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["shard_truncated", "bin_only"])
def test_a_damaged_folder_ends_the_run_before_training_with_exit_2(folders, workdir, kind):
    folder, named = _damage(kind, folders, workdir)
    proc = run_cli(f"model.preset={folder}", "debug=smoke", "mesh.shape=[2,4]",
                   "tracking.mode=disabled", "hydra.run.dir=run", cwd=workdir, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and named in errors[0], proc.stderr[-3000:]
    run = RunDir(workdir / "run")
    assert run.summary()["status"] == "failed" and not (run.path / METRICS).exists()


@pytest.mark.slow
def test_a_sharded_transformers_folder_trains_from_the_base_install(folders, workdir):
    """`pip install -e .` has no torch and no transformers: keras-hub's converter reads the
    safetensors shards (safetensors is a base dependency)."""
    hidden = hide_packages(workdir / "hidden", EXTRAS_ONLY)
    proc = run_cli(f"model.preset={folders['sharded']}", "debug=smoke", "mesh.shape=[2,4]",
                   "tracking.mode=disabled", "train.steps=3", "hydra.run.dir=run", cwd=workdir,
                   env={"PYTHONPATH": with_path(hidden)}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(hidden.glob("started-*"))  # the run had them hidden
    summary = RunDir(workdir / "run").summary()
    assert summary["status"] == "finished" and summary["steps"] == 3


@pytest.mark.slow  # torch builds and saves transformers' model
@pytest.mark.parametrize("kind", list(hf_checkpoints.KINDS))
def test_the_tensor_table_is_what_transformers_saves(kind, tmp_path):
    """The table describes checkpoint files (what users download and the export writes), so it
    is checked against what save_pretrained writes: transformers 5 fuses a mixture of experts'
    tensors in memory and writes them one per expert, as the published checkpoints hold them."""
    import transformers
    from safetensors import safe_open

    from runner.hf.shapes import tensor_shapes

    config_cls, extra, _ = hf_checkpoints.KINDS[kind]
    for kv_heads, tie in ((2, True), (1, False)):
        config = getattr(transformers, config_cls)(
            vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=kv_heads,
            **{**extra, "tie_word_embeddings": tie})
        folder = tmp_path / f"kv{kv_heads}"
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
        with safe_open(str(folder / "model.safetensors"), "np") as f:
            theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        ours = tensor_shapes(config.to_dict())
        if tie:  # the file leaves out the tied head; the table lists it (see tensor_shapes)
            ours.pop("lm_head.weight")
        assert ours == theirs

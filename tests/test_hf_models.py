"""Real checkpoints in, Hugging Face results out, proved with the real consumers: transformers
writes a tiny checkpoint of every family, the runner loads it (same logits), trains it with
`model.preset=<folder>` alone, exports it, and transformers and peft load the export with the
logits the runner computed (float32, at most 1e-4 apart)."""

import json
from pathlib import Path

import numpy as np
import pytest

import hf_checkpoints
from conftest import run_cli
from runner.rundir import EXPORT, EXPORT_ADAPTER, EXPORT_BASE, EXPORT_MERGED, PROBE, RunDir

TOLERANCE = 1e-4
# (checkpoint kind, kv heads): every family, and Gemma with several kv heads and with one
CASES = [(kind, 2) for kind in hf_checkpoints.KINDS] + [("gemma", 1)]
IDS = [f"{kind}-kv{kv}" for kind, kv in CASES]
TOKENS = np.array([[5, 17, 33, 2, 99, 150, 7, 8, 9, 10, 11, 12, 300, 301, 0, 4]])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {f"{kind}-kv{kv}": hf_checkpoints.make(kind, root / f"{kind}-kv{kv}", kv_heads=kv)
            for kind, kv in CASES}


def _runner_logits(causal_lm, token_ids) -> np.ndarray:
    x = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
    return np.asarray(causal_lm(x, training=False))


@pytest.mark.slow  # torch and transformers in-process: ~30 s, kept out of the fast lane
@pytest.mark.parametrize("case", IDS)
def test_a_transformers_checkpoint_loads_with_its_logits(checkpoints, case):
    from omegaconf import OmegaConf

    from runner import model

    model_cfg = OmegaConf.create({"preset": str(checkpoints[case]), "family": None,
                                  "architecture": None})
    lm = model.build_causal_lm(model_cfg, OmegaConf.create({"rank": 0}),
                               OmegaConf.create({"mode": "none"}), "float32")
    ours = _runner_logits(lm, TOKENS)
    theirs = hf_checkpoints.hf_logits(checkpoints[case], TOKENS)
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE


def _train(folder: Path, cwd: Path, *extra: str) -> RunDir:
    """`python -m runner model.preset=<folder>`: no model file, the default mesh (2 x 4) and the
    family's own layout, which leaves the 1 or 2 kv heads whole on the model axis of 4."""
    proc = run_cli(f"model.preset={folder}", "debug=smoke",
                   "tracking.mode=disabled", "train.steps=4", "optimizer.learning_rate=0.01",
                   "hydra.run.dir=run", *extra, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return RunDir(cwd / "run")


def _export(run: RunDir) -> None:
    proc = run_cli(str(run.path), module="runner.export", cwd=run.path.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{EXPORT_MERGED}: " in proc.stdout


def _consumer_logits(run: RunDir, token_ids):
    """transformers on the merged folder; peft on the adapter over its base; the base alone."""
    import peft
    import torch
    import transformers

    def load(path):
        return transformers.AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32).eval()

    base_path = json.loads((run / EXPORT / EXPORT_ADAPTER / "adapter_config.json").read_text()
                           )["base_model_name_or_path"]
    ids = torch.tensor(token_ids)
    with torch.no_grad():
        merged = load(run / EXPORT / EXPORT_MERGED)(ids).logits.numpy()
        base = load(base_path)(ids).logits.numpy()
        adapted = peft.PeftModel.from_pretrained(load(base_path),
                                                 str(run / EXPORT / EXPORT_ADAPTER)).eval()
        with_adapter = adapted(ids).logits.numpy()
    return merged, with_adapter, base


def _check_export(run: RunDir) -> None:
    probe = np.load(run / PROBE)  # the runner's own logits of the trained model, at its end
    real = probe["padding_mask"][..., None]  # padded positions differ by design
    merged, with_adapter, base = _consumer_logits(run, probe["token_ids"])
    assert np.max(np.abs(merged - probe["logits"]) * real) <= TOLERANCE
    assert np.max(np.abs(with_adapter - probe["logits"]) * real) <= TOLERANCE
    assert np.max(np.abs(base - probe["logits"]) * real) > 100 * TOLERANCE  # LoRA trained


@pytest.mark.slow
@pytest.mark.parametrize("case", IDS)
def test_trains_from_the_folder_alone_and_exports_what_hugging_face_loads(
        checkpoints, case, workdir):
    """One case exports with `python -m runner.export RUN_DIR`, the others at the end of the
    run (train.export_hf=true): the same export (runner/export/run.py), one process fewer."""
    if case == "gemma-kv2":
        run = _train(checkpoints[case], workdir)
        _export(run)
    else:
        run = _train(checkpoints[case], workdir, "train.export_hf=true")
        assert set(run.summary()["export"]) == {"merged", "adapter"}
    _check_export(run)
    config = json.loads((run / EXPORT / EXPORT_MERGED / "config.json").read_text())
    assert config["architectures"]
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(run / EXPORT / EXPORT_MERGED))
    assert tokenizer("the quick fox")["input_ids"]


@pytest.mark.slow
def test_a_keras_hub_base_exports_its_base_too(checkpoints, workdir):
    """A keras-hub preset folder (as keras-hub presets are): the export adds the base in
    transformers' format, its config.json generated from the backbone, its tokenizer by
    keras-hub's exporter."""
    from omegaconf import OmegaConf

    from runner import model

    model_cfg = OmegaConf.create({"preset": str(checkpoints["gemma-kv2"]), "family": None,
                                  "architecture": None})
    lm = model.build_causal_lm(model_cfg, OmegaConf.create({"rank": 0}),
                               OmegaConf.create({"mode": "none"}), "float32")
    lm.save_to_preset(str(workdir / "keras_preset"))
    run = _train(workdir / "keras_preset", workdir)
    _export(run)
    _check_export(run)
    assert (run / EXPORT / EXPORT_BASE / "model.safetensors").is_file()
    import transformers

    assert transformers.AutoTokenizer.from_pretrained(str(run / EXPORT / EXPORT_BASE))


def _bad_preset(kind: str, workdir: Path, checkpoints) -> Path:
    folder = workdir / kind
    folder.mkdir()
    if kind == "not_a_checkpoint":
        (folder / "config.json").write_text(json.dumps({"hello": 1}))
    elif kind == "unsupported_model_type":
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    else:  # a checkpoint whose tokenizer files were left behind
        source = checkpoints["llama-kv2"]
        for name in ("config.json", "model.safetensors"):
            (folder / name).write_bytes((source / name).read_bytes())
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("kind,words", [
    ("not_a_checkpoint", ["neither a keras-hub preset", "nor a Hugging Face checkpoint"]),
    ("unsupported_model_type", ["model_type 'bert'", "supported model types"]),
    ("no_tokenizer", ["has no tokenizer files", "tokenizer.json+tokenizer_config.json"]),
])
def test_a_preset_the_runner_cannot_use_is_one_line_before_any_weight(
        checkpoints, workdir, kind, words):
    folder = _bad_preset(kind, workdir, checkpoints)
    proc = run_cli(f"model.preset={folder}", "debug=smoke", "mesh.shape=[8,1]",
                   "hydra.run.dir=run", cwd=workdir, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and all(w in errors[0] for w in words), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert RunDir(workdir / "run").summary()["status"] == "failed"


@pytest.mark.slow
def test_export_refuses_what_it_cannot_export_and_writes_nothing(checkpoints, workdir):
    failed = workdir / "failed"
    folder = _bad_preset("no_tokenizer", workdir, checkpoints)
    run_cli(f"model.preset={folder}", "debug=smoke", f"hydra.run.dir={failed}", cwd=workdir)
    full = workdir / "full"  # every weight trained, no checkpoint kept
    done = run_cli("debug=smoke", "lora=none", "tracking.mode=disabled",
                   f"hydra.run.dir={full}", cwd=workdir, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for run, words in [(failed, "did not finish"), (workdir / "no_run", "not a run folder"),
                       (full, "kept no checkpoint of its last step")]:
        proc = run_cli(str(run), module="runner.export", cwd=workdir)
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and words in errors[0], proc.stderr[-3000:]
        assert not (run / EXPORT).exists()

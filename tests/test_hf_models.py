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
CASES = [("gemma", 2), ("gemma", 1), ("gemma2", 2), ("gemma3", 2), ("llama", 2),
         ("mistral", 2), ("qwen2", 2), ("qwen3", 2)]
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
    """`python -m runner model.preset=<folder>`: no model file, only a mesh the kv heads fit."""
    proc = run_cli(f"model.preset={folder}", "debug=smoke", "mesh.shape=[8,1]",
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
    real = (probe["token_ids"] != 0)[..., None]  # padded positions differ by design
    merged, with_adapter, base = _consumer_logits(run, probe["token_ids"])
    assert np.max(np.abs(merged - probe["logits"]) * real) <= TOLERANCE
    assert np.max(np.abs(with_adapter - probe["logits"]) * real) <= TOLERANCE
    assert np.max(np.abs(base - probe["logits"]) * real) > 100 * TOLERANCE  # LoRA trained


@pytest.mark.slow
@pytest.mark.parametrize("case", IDS)
def test_trains_from_the_folder_alone_and_exports_what_hugging_face_loads(
        checkpoints, case, workdir):
    run = _train(checkpoints[case], workdir)
    _export(run)
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

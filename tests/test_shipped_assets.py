"""The shipped corpus and tiny model are reproducible by the project's own scripts."""

import filecmp
import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow

ASSETS = ROOT / "runner" / "assets"


def test_make_corpus_reproduces_the_shipped_files(tmp_path):
    subprocess.run([sys.executable, "-m", "runner.tools.make_corpus", "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for name in ["pretrain.txt", "reviews_train.jsonl", "reviews_validation.jsonl",
                 "preferences_train_prefs.jsonl", "preferences_test_prefs.jsonl"]:
        assert filecmp.cmp(tmp_path / name, ASSETS / "corpus" / name, shallow=False), name


def test_make_tiny_gemma_writes_a_loadable_preset_with_the_shipped_tokenizer(tmp_path):
    """A short run of the pretraining script (the full one takes ~20 min: `--check` compares
    its weights with the shipped ones) gives the same tokenizer and architecture."""
    out = tmp_path / "tg"
    proc = subprocess.run([sys.executable, "-m", "runner.tools.make_tiny_gemma", "--steps", "2",
                           "--batch-size", "4", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped = ASSETS / "presets" / "tiny_gemma"
    vocab = "assets/tokenizer/vocabulary.spm"
    assert filecmp.cmp(out / vocab, shipped / vocab, shallow=False)  # byte for byte
    assert json.loads((out / "config.json").read_text())["config"] == \
        json.loads((shipped / "config.json").read_text())["config"]
    made = json.loads((out / "tiny_gemma.json").read_text())
    assert len(made["weights_sha256"]) == 64 and made["steps"] == 2

    import keras_hub

    causal_lm = keras_hub.models.CausalLM.from_preset(str(out))
    embedding = 512 * 128
    per_layer = 4 * 8 * 128 * 16 + 3 * 128 * 256 + 2 * 128  # q,k,v,out; gating x2, linear; norms
    assert causal_lm.backbone.count_params() == embedding + 4 * per_layer + 128  # + final norm

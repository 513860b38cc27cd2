"""The runner's preference objectives against TRL's, end to end: the runner trains the tiny model
a few steps with objective=dpo|orpo|simpo on text pairs and exports it (train.export_hf=true);
TRL 1.16's own trainers (tests/trl_reference.py) then compute the loss and metrics of the exported
model (export/merged: the policy; export/base: DPO's reference, the base the adapter applies to)
on the same token ids, and they must equal the runner's final evaluation (metrics.jsonl's eval_
record: the policy after the last step, on the held-out pairs).

The eval split is one batch, so TRL's one-batch figures are the runner's whole-split means.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from runner.rundir import EXPORT, EXPORT_BASE, EXPORT_MERGED, RunDir
from trl_reference import trl_preference_metrics

PRESET = Path(__file__).resolve().parents[1] / "runner" / "assets" / "presets" / "tiny_gemma"
EVAL_PAIRS = 4  # = train.batch_size: the eval split is one batch
# (objective, its overrides, the TRL keyword arguments that match them)
CASES = {
    "dpo": (["objective=dpo", "objective.beta=0.5"], {"beta": 0.5}),
    "orpo": (["objective=orpo", "objective.beta=0.2"], {"beta": 0.2}),
    "simpo": (["objective=simpo", "objective.beta=2.0", "objective.gamma=0.4"],
              {"beta": 2.0, "gamma": 0.4}),
}


def _pairs(n: int, offset: int) -> list[dict]:
    """Text pairs from the shipped corpus: a review chosen over encyclopedic sentences."""
    corpus = PRESET.parents[1] / "corpus"
    reviews = [json.loads(line)["text"] for line in open(corpus / "reviews_train.jsonl")]
    facts = open(corpus / "pretrain.txt").read().split(". ")
    return [{"prompt": "Write a review of a film. ", "chosen": reviews[offset + i],
             "rejected": f"{facts[offset + 2 * i]}. {facts[offset + 2 * i + 1]}."}
            for i in range(n)]


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _token_ids(records) -> list:
    """(prompt ids with bos, chosen ids + eos, rejected ids + eos), as the runner tokenizes a
    text pair (runner/preference_data.py: prompt and answer tokenized apart)."""
    import keras_hub

    tokenizer = keras_hub.models.GemmaTokenizer.from_preset(str(PRESET))

    def ids(text):
        return [int(t) for t in np.asarray(tokenizer(text))]
    bos, eos = tokenizer.start_token_id, tokenizer.end_token_id
    return [([bos] + ids(r["prompt"]), ids(r["chosen"]) + [eos], ids(r["rejected"]) + [eos])
            for r in records]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    evals = _pairs(EVAL_PAIRS, 100)
    return (_write(root / "train.jsonl", _pairs(16, 0)), _write(root / "eval.jsonl", evals),
            _token_ids(evals))


@pytest.mark.parametrize("objective", list(CASES))
def test_the_runners_preference_metrics_are_trls(objective, data, workdir):
    train, evals, pairs = data
    overrides, trl_args = CASES[objective]
    proc = run_cli("model=tiny_gemma", "mesh=2x4", "lora=rank4", *overrides,
                   f"dataset.files={train}", f"dataset.eval_files={evals}",
                   "dataset.eval_split=validation", "dataset.format=preference",
                   "train.batch_size=4", "train.steps=3", "train.sequence_length=128",
                   "train.precision=float32", "train.log_every=1", "train.export_hf=true",
                   "optimizer.learning_rate=0.01", "generate.prompts=[]",
                   "tracking.mode=disabled", "hydra.run.dir=run", cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunDir(workdir / "run")
    final = [r for r in run.metrics() if "eval_loss" in r][-1]
    export = run.path / EXPORT
    theirs = trl_preference_metrics(
        objective, str(export / EXPORT_MERGED), pairs,
        reference_dir=str(export / EXPORT_BASE) if objective == "dpo" else None, **trl_args)
    names = ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
             "rewards/margins", "logps/chosen", "logps/rejected"]
    if objective == "orpo":
        names += ["nll_loss", "log_odds_ratio", "log_odds_chosen"]
    for name in names:
        ours = final[f"eval_{name}"]
        # float32: 1e-4, relative for the summed log-probabilities (DPO's are ~ -100)
        assert abs(ours - theirs[name]) <= 1e-4 * max(1.0, abs(theirs[name])), \
            (name, ours, theirs[name])
    # the adapter moved the policy off the reference: the comparison is not of zeros
    assert abs(final["eval_rewards/margins"]) > 1e-3

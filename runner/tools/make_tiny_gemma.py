"""Pretrains the tiny Gemma that the project ships as a keras-hub local preset.

LoRA on random weights learns nothing worth showing, and no hub can be reached here, so the
default experiment fine-tunes a small model pretrained by this script on the shipped corpus
(runner/assets/corpus/pretrain.txt, written by runner.tools.make_corpus):

    python -m runner.tools.make_tiny_gemma                  # rewrites runner/assets/presets/tiny_gemma
    python -m runner.tools.make_tiny_gemma --out /tmp/tg    # writes elsewhere, e.g. to compare

Steps: train a SentencePiece unigram tokenizer with Gemma's special tokens, build a GemmaBackbone
with the architecture below, train it as a causal LM with AdamW, and `save_to_preset`. Everything
is seeded; on the same software and CPU the weights come out bit for bit the same, which
`weights_sha256` in the preset's `tiny_gemma.json` records (the script prints it and, with
--check, compares against the shipped preset).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_OUT = ASSETS / "presets" / "tiny_gemma"

# Divisible by 8 everywhere a mesh axis may split it: heads and kv heads (1x8 model axis),
# hidden and vocabulary (8x1 batch axis with the keras-hub layout's 2-D sharding).
ARCHITECTURE = dict(
    vocabulary_size=512,
    num_layers=4,
    num_query_heads=8,
    num_key_value_heads=8,
    hidden_dim=128,
    intermediate_dim=512,
    head_dim=16,
)
SEQUENCE_LENGTH = 128


def train_tokenizer(corpus: Path, vocab_size: int) -> bytes:
    """A SentencePiece proto with the ids keras-hub's GemmaTokenizer expects."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        pad_piece="<pad>", bos_piece="<bos>", eos_piece="<eos>", unk_piece="<unk>",
        # Gemma's chat markers, so instruction-style prompts tokenize as in the real family.
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        character_coverage=1.0,  # every character of the corpus is a piece: no <unk> for a rare "x"
        num_threads=1,  # one thread: the trained vocabulary must not depend on scheduling
        seed_sentencepiece_size=200000,
        minloglevel=2,
    )
    # The proto records the corpus path it was trained from; keep it relative so the file is the
    # same whichever folder the project was cloned into.
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model.getvalue())
    del proto.trainer_spec.input[:]
    proto.trainer_spec.input.append("runner/assets/corpus/pretrain.txt")
    return proto.SerializeToString()


def weights_sha256(model) -> str:
    digest = hashlib.sha256()
    for w in model.backbone.get_weights():
        digest.update(w.tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="retrain with the shipped preset's recorded steps, batch size and "
                             "seed, and compare the weights' hash with the shipped one")
    args = parser.parse_args(argv)
    if args.check:
        recorded = json.loads((DEFAULT_OUT / "tiny_gemma.json").read_text())
        args.steps, args.batch_size, args.seed = (recorded["steps"], recorded["batch_size"],
                                                  recorded["seed"])

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    keras.utils.set_random_seed(args.seed)
    model = pretrain(args.steps, args.batch_size, args.seed)
    for prompt in ["The river", "The film"]:
        print(repr(model.generate(prompt, max_length=40)))
    sha = weights_sha256(model)
    print(f"weights_sha256 {sha}")
    if args.check:
        shipped = json.loads((DEFAULT_OUT / "tiny_gemma.json").read_text())["weights_sha256"]
        print("MATCHES the shipped preset" if sha == shipped else f"DIFFERS from shipped {shipped}")
        raise SystemExit(0 if sha == shipped else 1)
    save(model, args, sha)


def pretrain(steps: int, batch_size: int, seed: int):
    """A GemmaCausalLM with a SentencePiece tokenizer trained on the corpus, pretrained on it."""
    import keras
    import keras_hub
    import tensorflow as tf

    corpus = ASSETS / "corpus" / "pretrain.txt"
    tokenizer = keras_hub.models.GemmaTokenizer(
        proto=train_tokenizer(corpus, ARCHITECTURE["vocabulary_size"]))
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(
        tokenizer, sequence_length=SEQUENCE_LENGTH)
    backbone = keras_hub.models.GemmaBackbone(**ARCHITECTURE)
    model = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)

    lines = [ln for ln in corpus.read_text(encoding="utf-8").splitlines() if ln.strip()]
    ds = (tf.data.Dataset.from_tensor_slices(lines)
          .shuffle(len(lines), seed=seed)
          .repeat()
          .batch(batch_size, drop_remainder=True)
          .take(steps))  # raw text: CausalLM.fit applies the attached preprocessor
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps - steps // 15), warmup_target=3e-3,
        warmup_steps=steps // 15, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
        sampler="greedy",
    )
    start = time.time()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=2)
    print(f"trained {steps} steps in {time.time() - start:.0f}s")
    return model


def save(model, args, sha: str) -> None:
    import keras
    import keras_hub

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_to_preset(str(args.out))
    (args.out / "tiny_gemma.json").write_text(json.dumps({
        "made_by": "python -m runner.tools.make_tiny_gemma",
        "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
        "sequence_length": SEQUENCE_LENGTH, "architecture": ARCHITECTURE,
        "versions": {"keras": keras.__version__, "keras_hub": keras_hub.__version__},
        "weights_sha256": sha,
    }, indent=2) + "\n")
    print(f"saved preset to {args.out}")


if __name__ == "__main__":
    main()

"""What the two hand-written baselines share, so they differ only in the training loop: the
process environment, their arguments, the shipped preset, and the same tiny_reviews batches."""

import argparse
import os
from pathlib import Path

PRESET = Path(__file__).resolve().parent.parent / "runner" / "assets" / "presets" / "tiny_gemma"


def set_environment() -> None:
    """Before keras/jax are imported: the runner's defaults (JAX, 8 virtual CPU devices)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    return parser.parse_args()


def tiny_reviews_batches(preprocessor, batch: int, steps: int):
    """The shipped reviews, shuffled with seed 0, batched and preprocessed as the runner does."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    import runner.datasets.tiny_reviews  # noqa: F401  registers the shipped TFDS builder

    texts = tfds.load("tiny_reviews", split="train", shuffle_files=False).map(
        lambda ex: ex["text"])
    return (texts.cache().shuffle(1600, seed=0).repeat().batch(batch, drop_remainder=True)
            .map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
            .take(steps).prefetch(tf.data.AUTOTUNE))

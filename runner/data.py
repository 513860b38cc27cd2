"""Dataset config -> a batched, preprocessed tf.data pipeline from TensorFlow Datasets.

The pipeline is a pure function of the config and the seed: the same config gives the same
batches in the same order (shuffle is seeded, maps keep order), which exact reproduction needs.
"""

from __future__ import annotations

import importlib
import socket
from dataclasses import dataclass
from pathlib import Path

from runner.errors import UserError

# TFDS fetches prepared datasets from Google Cloud Storage first; if that host is unreachable,
# a download would retry for minutes, so it is checked first.
DOWNLOAD_PROBE_HOST = "storage.googleapis.com"


@dataclass
class Stream:
    dataset: object  # tf.data.Dataset of (x, y, sample_weight) batches
    steps: int  # batches it yields in all
    steps_per_epoch: int
    examples_per_epoch: int


def _builder(dataset_cfg):
    import tensorflow_datasets as tfds

    from runner.datasets import SHIPPED

    if dataset_cfg.name in SHIPPED:
        importlib.import_module(SHIPPED[dataset_cfg.name])  # registers the builder with TFDS
    data_dir = str(Path(dataset_cfg.data_dir).expanduser()) if dataset_cfg.data_dir else None
    try:
        builder = tfds.builder(dataset_cfg.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"dataset.name={dataset_cfg.name} is not a TFDS dataset; shipped: {sorted(SHIPPED)}, "
            "others: `python -c \"import tensorflow_datasets as tfds; print(tfds.list_builders())\"`"
        ) from None
    if not builder.is_prepared():
        if dataset_cfg.name not in SHIPPED:
            _check_can_download(dataset_cfg, builder)
        builder.download_and_prepare()
    return builder


def _check_can_download(dataset_cfg, builder) -> None:
    where = builder.data_dir
    fix = (f"prepare it where there is a network (`tfds build {dataset_cfg.name} --data_dir DIR`), "
           "copy DIR here and set dataset.data_dir=DIR")
    if not dataset_cfg.download:
        raise UserError(f"dataset.name={dataset_cfg.name} is not prepared under {where} and "
                        f"dataset.download=false; {fix}")
    try:
        socket.create_connection((DOWNLOAD_PROBE_HOST, 443), timeout=3.0).close()
    except OSError:
        raise UserError(f"dataset.name={dataset_cfg.name} is not prepared under {where} and this "
                        f"machine cannot download it (offline); {fix}") from None


def _num_examples(builder, dataset_cfg) -> int:
    try:
        n = builder.info.splits[dataset_cfg.split].num_examples
    except (KeyError, ValueError) as exc:
        raise UserError(f"dataset.split={dataset_cfg.split} is not a split of "
                        f"{dataset_cfg.name} ({exc}); splits: {sorted(builder.info.splits)}"
                        ) from None
    return min(n, dataset_cfg.take) if dataset_cfg.take else n


def build(dataset_cfg, preprocessor, batch_size: int, epochs: int, max_steps, seed: int) -> Stream:
    """Text examples -> shuffled -> batched (global batch) -> keras-hub preprocessor.

    preprocessor: the CausalLM preprocessor with its sequence_length already set. Epochs are
    concatenated (reshuffled each pass) and cut at max_steps, so one Keras epoch runs them all.
    """
    import tensorflow as tf

    builder = _builder(dataset_cfg)
    n = _num_examples(builder, dataset_cfg)
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise UserError(f"train.batch_size={batch_size} is larger than the {n} examples of "
                        f"{dataset_cfg.name}[{dataset_cfg.split}]; use a smaller batch")
    steps = steps_per_epoch * epochs
    if max_steps:
        steps = min(steps, max_steps)

    ds = builder.as_dataset(split=dataset_cfg.split, shuffle_files=False)
    if dataset_cfg.take:
        ds = ds.take(dataset_cfg.take)
    features = builder.info.features
    if dataset_cfg.text_field not in features:
        raise UserError(f"dataset.text_field={dataset_cfg.text_field} is not a feature of "
                        f"{dataset_cfg.name}; features: {sorted(features)}")
    field = dataset_cfg.text_field
    ds = (ds.map(lambda ex: ex[field])
          .cache()
          .shuffle(min(dataset_cfg.shuffle_buffer, n), seed=seed, reshuffle_each_iteration=True)
          .repeat(epochs)
          .batch(batch_size, drop_remainder=True)  # static shapes: one compiled step
          .map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .take(steps)
          .prefetch(tf.data.AUTOTUNE))
    return Stream(dataset=ds, steps=steps, steps_per_epoch=steps_per_epoch, examples_per_epoch=n)

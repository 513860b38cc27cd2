"""Dataset config -> a batched, preprocessed tf.data pipeline from TensorFlow Datasets.

The pipeline is a pure function of the config and the seed: the same config gives the same
batches in the same order (shuffle is seeded, maps keep order), which exact reproduction needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

from runner import packing
from runner.datasets.opening import label, open_dataset
from runner.errors import UserError
from runner.formats import FORMATS


@dataclass(frozen=True)
class Counts:
    """What fitting a split's examples to train.sequence_length did to them."""
    examples: int  # read from the split (after dataset.take)
    too_long: int  # longer than sequence_length + 1 tokens (start token and targets included)
    tokens_cut: int  # tokens those examples lost (dataset.too_long=truncate)
    dropped: int  # examples left out (dataset.too_long=drop): too_long, or 0
    no_room: int = 0  # preference pairs left out: the prompt leaves no answer token in a row
    rows: Optional[int] = None  # dataset.packing: the rows the kept examples were packed into
    filled: Optional[float] = None  # the share of the rows' token slots that hold a token

    @property
    def kept(self) -> int:
        return self.examples - self.dropped - self.no_room

    def line(self, where: str, sequence_length: int) -> str:
        full = f"; {self.filled:.0%} of their token slots hold tokens (dataset.packing=true " \
            "fills more)" if self.filled is not None else ""
        if self.no_room:
            full += (f"; {self.no_room:,} pairs left out: their prompt leaves no answer token "
                     "(raise train.sequence_length to keep them)")
        if not self.too_long:
            return f"{where}: {self.examples:,} examples, none longer than " \
                   f"train.sequence_length={sequence_length}{full}"
        what = (f"dropped (dataset.too_long=drop), {self.kept:,} left" if self.dropped else
                f"cut to fit, {self.tokens_cut:,} tokens lost (dataset.too_long=drop leaves "
                "them out instead)")
        return (f"{where}: {self.examples:,} examples, {self.too_long:,} "
                f"({self.too_long / self.examples:.1%}) longer than "
                f"train.sequence_length={sequence_length}: {what}{full}")


@dataclass
class Stream:
    dataset: object  # tf.data.Dataset of (x, y, sample_weight) batches (None: see replay)
    steps: int  # batches it yields in all
    steps_per_epoch: int
    examples_per_epoch: int
    replay: Optional[Callable[[int], object]] = None  # step -> the batches from it (synthetic)
    counts: Optional[Counts] = None  # None: synthetic tokens, fitted by construction

    def from_step(self, step: int):
        """The batches from `step` on: a resumed run replays the stream to its checkpoint."""
        return self.replay(step) if self.replay is not None else self.dataset.skip(step)


def _counted(ds, drop: bool, width: int):
    """(example, length[, usable]) -> (the examples, dropping those over `width` if drop and
    the unusable ones; Counts). Counting reads the whole split once, before training (dropping
    needs the kept count for the steps per epoch anyway); the caller has cached `ds`, so the
    tokenizing it costs is the first epoch's, not extra (format=text tokenizes once more here:
    its preprocessor works on batches)."""
    import tensorflow as tf

    if len(ds.element_spec) == 2:
        ds = ds.map(lambda example, length: (example, length, True))
    lengths = ds.map(lambda example, length, usable: (tf.cast(length, "int64"), usable))
    zero = tf.constant(0, "int64")

    def add(acc, item):
        n, usable = item
        over = n > width
        left_out = tf.logical_or(tf.logical_and(drop, over), tf.logical_not(usable))
        return (acc[0] + 1, acc[1] + tf.cast(over, "int64"),
                acc[2] + tf.where(usable, tf.maximum(n - width, 0), zero),
                # the model's input slots an example fills (kept examples only)
                acc[3] + tf.where(left_out, zero, tf.minimum(n, width) - 1),
                acc[4] + tf.cast(tf.logical_not(usable), "int64"))
    examples, over, cut, used, unusable = (int(v) for v in lengths.reduce(
        (zero, zero, zero, zero, zero), add))
    if drop:
        ds = ds.filter(lambda example, length, usable: length <= width)
    ds = ds.filter(lambda example, length, usable: usable)
    counts = Counts(examples, over, 0 if drop else cut, over if drop else 0, no_room=unusable)
    if drop and unusable:  # a pair with no room is over the width: dropped once, not twice
        counts = dataclasses.replace(counts, no_room=0)
    kept = counts.kept
    counts = dataclasses.replace(counts, filled=used / (kept * (width - 1)) if kept else 0.0)
    return ds.map(lambda example, length, usable: example), counts


def _examples(opened, dataset_cfg, split, preprocessor, sequence_length):
    """(dataset of examples ready to batch, already packed?, Counts)."""
    import logging

    builder = opened.builder
    ds = builder.as_dataset(split=split, shuffle_files=False)
    if dataset_cfg.take:
        ds = ds.take(dataset_cfg.take)
    features = builder.info.features
    ds, packed = FORMATS[str(dataset_cfg.format)].examples(ds, dataset_cfg, features, preprocessor,
                                                            sequence_length)
    ds = ds.cache()  # tokenized once, reused by every epoch and evaluation
    ds, counts = _counted(ds, dataset_cfg.too_long == "drop", sequence_length + 1)
    logging.getLogger(__name__).info("%s", counts.line(f"{opened.label}[{split}]",
                                                       sequence_length))
    if counts.examples == 0:
        raise UserError(f"{opened.label}[{split}] holds no example; check dataset.split, "
                        "dataset.take and the data")
    if counts.kept == 0 and counts.no_room:
        raise UserError(f"{opened.label}[{split}]: every pair's prompt fills "
                        f"train.sequence_length={sequence_length}, leaving no answer token; "
                        "raise train.sequence_length")
    if counts.kept == 0:
        raise UserError(f"{opened.label}[{split}] has no example left after dropping those "
                        f"longer than train.sequence_length={sequence_length}; raise "
                        "train.sequence_length or set dataset.too_long=truncate")
    return ds, packed, counts


def _text_packer(preprocessor):
    """The preprocessor as a function of a batch of texts. Gemma 3's takes only prompt/response
    pairs (its call indexes x["prompts"]): a text is the response to an empty prompt, which
    gives the same tokens ([bos] + text + [eos]) and a loss on every one of them."""
    import keras_hub
    import tensorflow as tf

    if not isinstance(preprocessor, keras_hub.models.Gemma3CausalLMPreprocessor):
        return preprocessor
    return lambda texts: preprocessor({"prompts": tf.fill(tf.shape(texts), ""),
                                       "responses": texts})


def _packed_rows(ds, packed: bool, preprocessor, sequence_length: int, counts: Counts, where):
    """dataset.packing=true: the split's examples packed into rows (runner/packing.py), as
    (tf.data of rows, Counts with the rows and their fill)."""
    import dataclasses
    import logging

    import tensorflow as tf

    if not packed:  # format=text: keras-hub's preprocessor makes each example's triple
        ds = ds.batch(256).map(_text_packer(preprocessor), num_parallel_calls=tf.data.AUTOTUNE,
                               deterministic=True).unbatch()
    pad = preprocessor.tokenizer.pad_token_id
    rows = packing.pack(ds.as_numpy_iterator(), sequence_length, int(pad or 0))
    logging.getLogger(__name__).info(
        "%s: %d examples packed into %d rows of %d tokens (dataset.packing=true): %.1f%% of "
        "the slots hold tokens", where, rows.documents, rows.rows, sequence_length,
        100 * rows.filled)
    return rows.dataset(), dataclasses.replace(counts, rows=rows.rows, filled=rows.filled)


def _batched(ds, packed: bool, preprocessor, batch_size: int, dataset_cfg):
    import tensorflow as tf

    ds = ds.batch(batch_size, drop_remainder=True)  # static shapes: one compiled step
    if not packed:
        ds = ds.map(_text_packer(preprocessor), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    to_rows = FORMATS[str(dataset_cfg.format)].to_rows
    if to_rows is not None:  # preference pairs: batch_size pairs -> 2 x batch_size rows
        ds = ds.map(to_rows, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds


def build(dataset_cfg, preprocessor, batch_size: int, sequence_length: int, epochs: int,
          max_steps, seed: int) -> Stream:
    """Training stream: examples -> shuffled -> repeated for the epochs -> batched (global batch)
    -> packed. Epochs are concatenated and cut at max_steps, so one Keras epoch runs them all.

    preprocessor: the CausalLM preprocessor with its sequence_length already set.
    """
    import tensorflow as tf

    opened = open_dataset(dataset_cfg)
    ds, packed, counts = _examples(opened, dataset_cfg, dataset_cfg.split, preprocessor,
                                   sequence_length)
    if dataset_cfg.packing:
        ds, counts = _packed_rows(ds, packed, preprocessor, sequence_length, counts,
                                  f"{opened.label}[{dataset_cfg.split}]")
        packed = True
    n = counts.rows if dataset_cfg.packing else counts.kept
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        what = "packed rows" if dataset_cfg.packing else "usable examples"
        raise UserError(f"train.batch_size={batch_size} is larger than the {n} {what} "
                        f"of {label(dataset_cfg)}[{dataset_cfg.split}]; use a smaller batch")
    steps = steps_per_epoch * epochs
    if max_steps:
        steps = min(steps, max_steps)
    ds = ds.shuffle(min(dataset_cfg.shuffle_buffer, n), seed=seed, reshuffle_each_iteration=True)
    ds = _batched(ds.repeat(epochs), packed, preprocessor, batch_size, dataset_cfg)
    ds = ds.take(steps).prefetch(tf.data.AUTOTUNE)
    return Stream(dataset=ds, steps=steps, steps_per_epoch=steps_per_epoch, examples_per_epoch=n,
                  counts=counts)


def build_eval(dataset_cfg, preprocessor, batch_size: int, sequence_length: int,
               max_batches) -> Stream:
    """Evaluation stream over dataset.eval_split: same packing, no shuffling, fixed batches."""
    import tensorflow as tf

    opened = open_dataset(dataset_cfg)
    ds, packed, counts = _examples(opened, dataset_cfg, dataset_cfg.eval_split, preprocessor,
                                   sequence_length)
    if dataset_cfg.packing:
        ds, counts = _packed_rows(ds, packed, preprocessor, sequence_length, counts,
                                  f"{opened.label}[{dataset_cfg.eval_split}]")
        packed = True
    n = counts.rows if dataset_cfg.packing else counts.kept
    steps = n // batch_size
    if max_batches:
        steps = min(steps, max_batches)
    if steps == 0:
        raise UserError(f"dataset.eval_split={dataset_cfg.eval_split} has {n} usable examples, "
                        f"fewer than one batch of train.batch_size={batch_size}")
    ds = _batched(ds, packed, preprocessor, batch_size, dataset_cfg).take(steps).cache()
    return Stream(dataset=ds.prefetch(tf.data.AUTOTUNE), steps=steps, steps_per_epoch=steps,
                  examples_per_epoch=n, counts=counts)

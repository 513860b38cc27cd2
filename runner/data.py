"""Dataset config -> a batched, preprocessed tf.data pipeline from TensorFlow Datasets.

The pipeline is a pure function of the config and the seed: the same config gives the same
batches in the same order (shuffle is seeded, maps keep order), which exact reproduction needs.
"""

from __future__ import annotations

import importlib
import string
from dataclasses import dataclass
from pathlib import Path

from runner.errors import UserError
from runner.network import reachable as _reachable

# TFDS fetches prepared datasets from Google Cloud Storage first; if that host is unreachable,
# a download would retry for minutes, so it is checked first.
DOWNLOAD_PROBE_HOST = "storage.googleapis.com"


@dataclass
class Stream:
    dataset: object  # tf.data.Dataset of (x, y, sample_weight) batches
    steps: int  # batches it yields in all
    steps_per_epoch: int
    examples_per_epoch: int


def open_builder(dataset_cfg, download: bool = True):
    """The TFDS builder of dataset.name, prepared (shipped datasets are prepared here, others
    downloaded when dataset.download allows and the host answers). download=False (planning):
    None when it is not prepared here, instead of fetching it."""
    import tensorflow_datasets as tfds

    from runner.datasets import SHIPPED

    tfds.display_progress_bar(False)
    if dataset_cfg.name in SHIPPED:
        importlib.import_module(SHIPPED[dataset_cfg.name])  # registers the builder with TFDS
    data_dir = str(Path(dataset_cfg.data_dir).expanduser()) if dataset_cfg.data_dir else None
    if dataset_cfg.name.startswith("huggingface:") and not _reachable("huggingface.co"):
        # TFDS's huggingface namespace asks the hub for the dataset's metadata even when a
        # prepared copy exists, and retries for minutes offline.
        if not download:
            return None
        raise UserError(f"dataset.name={dataset_cfg.name} is read through huggingface.co, which "
                        "cannot be reached (offline?); use its stand-in (debug=smoke) or run "
                        "where the hub is reachable")
    try:
        builder = tfds.builder(dataset_cfg.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"dataset.name={dataset_cfg.name} is not a TFDS dataset; shipped: {sorted(SHIPPED)}, "
            "others: `python -c \"import tensorflow_datasets as tfds; "
            "print(tfds.list_builders())\"`") from None
    if not builder.is_prepared():
        if dataset_cfg.name not in SHIPPED:
            if not download:
                return None
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
    if not _reachable(DOWNLOAD_PROBE_HOST):
        raise UserError(f"dataset.name={dataset_cfg.name} is not prepared under {where} and this "
                        f"machine cannot download it (offline); {fix}")


def _num_examples(builder, dataset_cfg, split: str) -> int:
    n = builder.info.splits[split].num_examples  # the split was checked by problems()
    return min(n, dataset_cfg.take) if dataset_cfg.take else n


def problems(dataset_cfg, builder) -> list[str]:
    """What the dataset's own metadata (splits, features) says is wrong with the dataset
    group, before any example is read: every problem, each naming its key and the fix."""
    found = []
    for key in ("split", "eval_split"):
        split = getattr(dataset_cfg, key)
        if split is not None:
            try:
                builder.info.splits[split]  # also parses slices: train[:10%]
            except (KeyError, ValueError, AssertionError) as exc:
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                found.append(f"dataset.{key}={split!r} is not a split of {dataset_cfg.name} "
                             f"({first}); splits: {sorted(builder.info.splits)}")
    features = builder.info.features
    if dataset_cfg.format == "prompt_response":
        if not dataset_cfg.response_template:
            found.append("dataset.format=prompt_response needs dataset.response_template, "
                         "e.g. '{dst}'")
        for key in ("prompt_template", "response_template"):
            found += _template_problems(f"dataset.{key}", getattr(dataset_cfg, key), features)
    elif dataset_cfg.text_field not in features:
        found.append(f"dataset.text_field={dataset_cfg.text_field} is not a feature of "
                     f"{dataset_cfg.name}; features: {sorted(features)}")
    return found


def _template_problems(key: str, template: str, features) -> list[str]:
    fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    return [f"{key}={template!r} names {{{f}}}, which is not a text feature of this dataset; "
            f"features: {sorted(features)}" for f in fields if f not in features]


def _render(template: str, key: str, features):
    """A Python format string over string features -> a function of a TFDS example."""
    import tensorflow as tf

    parts = []  # (is a feature name?, text)
    for literal, field, spec, conv in string.Formatter().parse(template):
        if literal:
            parts.append((False, literal))
        if field is None:
            continue
        if spec or conv or field not in features:  # problems() reported it before
            raise UserError(_template_problems(key, template, features)[0])
        parts.append((True, field))

    def render(example):
        pieces = [example[text] if is_field else tf.constant(text) for is_field, text in parts]
        return tf.strings.join(pieces) if pieces else tf.constant("")
    return render


def _text_examples(ds, dataset_cfg, features, preprocessor, sequence_length: int):
    """format=text: one field; keras-hub's preprocessor packs it (loss on every real token)."""
    import tensorflow as tf

    field = dataset_cfg.text_field
    ds = ds.map(lambda ex: ex[field], num_parallel_calls=tf.data.AUTOTUNE)
    if dataset_cfg.too_long == "drop":
        tokenizer = preprocessor.tokenizer  # [bos] + tokens + [eos] must fit sequence_length + 1
        ds = ds.filter(lambda text: tf.shape(tokenizer(text))[0] + 2 <= sequence_length + 1)
    return ds, False  # not yet packed: the preprocessor runs on batches


def _prompt_response_examples(ds, dataset_cfg, features, tokenizer, sequence_length: int):
    """format=prompt_response: token ids [bos] + prompt + response (+ eos), with sample weight
    1 only where the *target* is a response token, so the prompt costs no loss.

    keras-hub's Gemma preprocessor takes no prompt/response pairs, so the mask is built here.
    """
    import tensorflow as tf

    prompt_of = _render(dataset_cfg.prompt_template, "dataset.prompt_template", features)
    response_of = _render(dataset_cfg.response_template, "dataset.response_template", features)
    bos, eos, pad = tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id
    width = sequence_length + 1
    drop = dataset_cfg.too_long == "drop"
    add_eos = bool(dataset_cfg.add_eos)

    def pack(example):
        prompt = tf.cast(tokenizer(prompt_of(example)), "int32")
        response = tf.cast(tokenizer(response_of(example)), "int32")
        head = tf.concat([[bos], prompt], 0)
        tail = tf.concat([response, [eos]], 0) if add_eos else response
        ids = tf.concat([head, tail], 0)
        weights = tf.concat([tf.zeros_like(head, "float32"), tf.ones_like(tail, "float32")], 0)
        n = tf.shape(ids)[0]
        ids, weights = ids[:width], weights[:width]
        pad_len = width - tf.shape(ids)[0]
        ids = tf.pad(ids, [[0, pad_len]], constant_values=pad)
        weights = tf.pad(weights, [[0, pad_len]])
        mask = tf.range(width) < tf.minimum(n, width)
        x = {"token_ids": ids[:-1], "padding_mask": mask[:-1]}
        return x, ids[1:], weights[1:], n <= width

    ds = ds.map(pack, num_parallel_calls=tf.data.AUTOTUNE)
    if drop:
        ds = ds.filter(lambda x, y, w, fits: fits)
    return ds.map(lambda x, y, w, fits: (x, y, w)), True


def _examples(builder, dataset_cfg, split, preprocessor, sequence_length):
    """(dataset of examples ready to batch, already packed?, number of examples)."""
    ds = builder.as_dataset(split=split, shuffle_files=False)
    n = _num_examples(builder, dataset_cfg, split)
    if dataset_cfg.take:
        ds = ds.take(dataset_cfg.take)
    features = builder.info.features
    if dataset_cfg.format == "prompt_response":
        ds, packed = _prompt_response_examples(ds, dataset_cfg, features, preprocessor.tokenizer,
                                               sequence_length)
    else:
        ds, packed = _text_examples(ds, dataset_cfg, features, preprocessor, sequence_length)
    ds = ds.cache()  # tokenized once, reused by every epoch and evaluation
    if dataset_cfg.too_long == "drop":
        n = int(ds.reduce(0, lambda count, _: count + 1))  # what is left after dropping
    return ds, packed, n


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


def _batched(ds, packed: bool, preprocessor, batch_size: int):
    import tensorflow as tf

    ds = ds.batch(batch_size, drop_remainder=True)  # static shapes: one compiled step
    if not packed:
        ds = ds.map(_text_packer(preprocessor), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=True)
    return ds


def build(dataset_cfg, preprocessor, batch_size: int, sequence_length: int, epochs: int,
          max_steps, seed: int) -> Stream:
    """Training stream: examples -> shuffled -> repeated for the epochs -> batched (global batch)
    -> packed. Epochs are concatenated and cut at max_steps, so one Keras epoch runs them all.

    preprocessor: the CausalLM preprocessor with its sequence_length already set.
    """
    import tensorflow as tf

    builder = open_builder(dataset_cfg)
    ds, packed, n = _examples(builder, dataset_cfg, dataset_cfg.split, preprocessor,
                              sequence_length)
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise UserError(f"train.batch_size={batch_size} is larger than the {n} usable examples "
                        f"of {dataset_cfg.name}[{dataset_cfg.split}]; use a smaller batch")
    steps = steps_per_epoch * epochs
    if max_steps:
        steps = min(steps, max_steps)
    ds = ds.shuffle(min(dataset_cfg.shuffle_buffer, n), seed=seed, reshuffle_each_iteration=True)
    ds = _batched(ds.repeat(epochs), packed, preprocessor, batch_size)
    ds = ds.take(steps).prefetch(tf.data.AUTOTUNE)
    return Stream(dataset=ds, steps=steps, steps_per_epoch=steps_per_epoch, examples_per_epoch=n)


def build_eval(dataset_cfg, preprocessor, batch_size: int, sequence_length: int,
               max_batches) -> Stream:
    """Evaluation stream over dataset.eval_split: same packing, no shuffling, fixed batches."""
    import tensorflow as tf

    builder = open_builder(dataset_cfg)
    ds, packed, n = _examples(builder, dataset_cfg, dataset_cfg.eval_split, preprocessor,
                              sequence_length)
    steps = n // batch_size
    if max_batches:
        steps = min(steps, max_batches)
    if steps == 0:
        raise UserError(f"dataset.eval_split={dataset_cfg.eval_split} has {n} usable examples, "
                        f"fewer than one batch of train.batch_size={batch_size}")
    ds = _batched(ds, packed, preprocessor, batch_size).take(steps).cache()
    return Stream(dataset=ds.prefetch(tf.data.AUTOTUNE), steps=steps, steps_per_epoch=steps,
                  examples_per_epoch=n)

"""Dataset config -> a batched, preprocessed tf.data pipeline from TensorFlow Datasets.

The pipeline is a pure function of the config and the seed: the same config gives the same
batches in the same order (shuffle is seeded, maps keep order), which exact reproduction needs.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable, Optional

from runner.datasets.opening import label, open_dataset
from runner.errors import UserError


@dataclass
class Stream:
    dataset: object  # tf.data.Dataset of (x, y, sample_weight) batches (None: see replay)
    steps: int  # batches it yields in all
    steps_per_epoch: int
    examples_per_epoch: int
    replay: Optional[Callable[[int], object]] = None  # step -> the batches from it (synthetic)

    def from_step(self, step: int):
        """The batches from `step` on: a resumed run replays the stream to its checkpoint."""
        return self.replay(step) if self.replay is not None else self.dataset.skip(step)


def _num_examples(builder, dataset_cfg, split: str) -> int:
    n = builder.info.splits[split].num_examples  # the split was checked by problems()
    return min(n, dataset_cfg.take) if dataset_cfg.take else n


def _render(template: str, key: str, features):
    """A Python format string over string features -> a function of a TFDS example."""
    import tensorflow as tf

    parts = []  # (is a feature name?, text)
    for literal, field, spec, conv in string.Formatter().parse(template):
        if literal:
            parts.append((False, literal))
        if field is None:
            continue
        if spec or conv or field not in features:  # the check stage reported it before
            raise UserError(f"{key}={template!r}: {{{field}}} is not a text feature")
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
        return fit_to_width(ids, weights, width, pad)

    return _packed(ds.map(pack, num_parallel_calls=tf.data.AUTOTUNE), drop), True


def fit_to_width(ids, weights, width: int, pad: int):
    """Token ids and their loss weights -> (x, y, sample weight, fits?) at `width` tokens:
    cut or padded, the targets shifted by one, the weight that of the target token."""
    import tensorflow as tf

    n = tf.shape(ids)[0]
    ids, weights = ids[:width], weights[:width]
    pad_len = width - tf.shape(ids)[0]
    ids = tf.pad(ids, [[0, pad_len]], constant_values=pad)
    weights = tf.pad(weights, [[0, pad_len]])
    mask = tf.range(width) < tf.minimum(n, width)
    x = {"token_ids": ids[:-1], "padding_mask": mask[:-1]}
    return x, ids[1:], weights[1:], n <= width


def _packed(ds, drop: bool):
    if drop:
        ds = ds.filter(lambda x, y, w, fits: fits)
    return ds.map(lambda x, y, w, fits: (x, y, w))


def _examples(opened, dataset_cfg, split, preprocessor, sequence_length):
    """(dataset of examples ready to batch, already packed?, number of examples)."""
    builder = opened.builder
    ds = builder.as_dataset(split=split, shuffle_files=False)
    n = _num_examples(builder, dataset_cfg, split)
    if dataset_cfg.take:
        ds = ds.take(dataset_cfg.take)
    features = builder.info.features
    if dataset_cfg.format == "prompt_response":
        ds, packed = _prompt_response_examples(ds, dataset_cfg, features, preprocessor.tokenizer,
                                               sequence_length)
    elif dataset_cfg.format == "chat":
        from runner.chat_data import chat_examples
        from runner.datasets.problems import messages_field

        ds, packed = chat_examples(ds, dataset_cfg, messages_field(dataset_cfg, features),
                                   preprocessor.tokenizer, sequence_length)
    else:
        ds, packed = _text_examples(ds, dataset_cfg, features, preprocessor, sequence_length)
    ds = ds.cache()  # tokenized once, reused by every epoch and evaluation
    if dataset_cfg.too_long == "drop":
        n = int(ds.reduce(0, lambda count, _: count + 1))  # what is left after dropping
        if n == 0:
            raise UserError(f"{opened.label}[{split}] has no example left after dropping those "
                            f"longer than train.sequence_length={sequence_length}; raise "
                            "train.sequence_length or set dataset.too_long=truncate")
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

    opened = open_dataset(dataset_cfg)
    ds, packed, n = _examples(opened, dataset_cfg, dataset_cfg.split, preprocessor,
                              sequence_length)
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise UserError(f"train.batch_size={batch_size} is larger than the {n} usable examples "
                        f"of {label(dataset_cfg)}[{dataset_cfg.split}]; use a smaller batch")
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

    opened = open_dataset(dataset_cfg)
    ds, packed, n = _examples(opened, dataset_cfg, dataset_cfg.eval_split, preprocessor,
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

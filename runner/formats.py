"""The data formats (dataset.format), one object each, in one table: what the format checks
before any weight loads, and how it turns a split's examples into token ids in tf.data.
runner/checks.py and runner/data.py look the format up here and never branch on its name; a new
format is one DataFormat more (format=preference: runner/preference_data.py). The checks a format shares with
others (splits, fields records lack, values that are not text) are runner/datasets/problems.py's.
dataset=synthetic is not a format of records: runner/datasets/synthetic.py holds its checks and
its stream."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable, Optional

from runner import preference_data
from runner.chat_data import chat_examples
from runner.datasets.problems import (WHERE, chat_field_problems, conversation_problems,
                                      messages_field, missing, non_text, split_problems,
                                      template_fields, template_problems)
from runner.errors import UserError
from runner.fixed_width import fit_to_width


@dataclass(frozen=True)
class DataFormat:
    name: str
    # (dataset_cfg, opened, features, family, splits_ok) -> one line per problem; family: the
    # model's (None when it cannot be told); splits_ok: no problem with the splits so far
    problems: Callable
    # (ds, dataset_cfg, features, preprocessor, sequence_length) -> (ds, packed): with packed,
    # each element is ((x, y, sample weight), length) at full width, or ((x, y, sample weight),
    # length, usable) where an example can be unusable however it is cut (a preference pair
    # whose prompt fills the sequence); else (text, length) for the preprocessor to pack per batch
    examples: Callable
    # rows of the model's batch per example: 2 for preference pairs (chosen, rejected), which
    # `to_rows` turns a batch of examples into
    rows_per_example: int = 1
    to_rows: Optional[Callable] = None


def dataset_problems(dataset_cfg, opened, family=None) -> list[str]:
    """Everything wrong with the dataset group for this data (runner.datasets.opening.Opened)."""
    found = split_problems(dataset_cfg, opened)
    features = {k: v for k, v in opened.builder.info.features.items() if k != WHERE}
    return found + FORMATS[str(dataset_cfg.format)].problems(dataset_cfg, opened, features,
                                                             family, not found)


def _text_problems(dataset_cfg, opened, features, family, splits_ok) -> list[str]:
    if dataset_cfg.text_field not in features:
        return [f"dataset.text_field={dataset_cfg.text_field} is not a feature of "
                f"{opened.label}; features: {sorted(features)}"]
    return (missing(opened, dataset_cfg.text_field, "dataset.text_field")
            + non_text(dataset_cfg, opened, dataset_cfg.text_field, "dataset.text_field"))


def _prompt_response_problems(dataset_cfg, opened, features, family, splits_ok) -> list[str]:
    found = []
    if not dataset_cfg.response_template:
        found.append("dataset.format=prompt_response needs dataset.response_template, "
                     "e.g. '{dst}'")
    for key in ("prompt_template", "response_template"):
        template = getattr(dataset_cfg, key)
        found += template_problems(f"dataset.{key}", template, features)
        for name in template_fields(template):
            found += missing(opened, name, f"dataset.{key}")
            found += non_text(dataset_cfg, opened, name, f"dataset.{key}")
    return found


def _chat_problems(dataset_cfg, opened, features, family, splits_ok) -> list[str]:
    """The messages field, then every conversation rendered by the family's template."""
    found = chat_field_problems(dataset_cfg, opened, features)
    if not found and splits_ok and family is not None:
        found += conversation_problems(dataset_cfg, opened, family)
    return found


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
    """format=text: (text, its length in tokens) per example; keras-hub's preprocessor packs the
    texts of a batch later (loss on every real token). The length, [bos] + tokens + [eos], is
    what must fit sequence_length + 1."""
    import tensorflow as tf

    field, tokenizer = dataset_cfg.text_field, preprocessor.tokenizer
    return ds.map(lambda ex: (ex[field], tf.shape(tokenizer(ex[field]))[0] + 2),
                  num_parallel_calls=tf.data.AUTOTUNE), False


def _prompt_response_examples(ds, dataset_cfg, features, preprocessor, sequence_length: int):
    """format=prompt_response: token ids [bos] + prompt + response (+ eos), with sample weight
    1 only where the *target* is a response token, so the prompt costs no loss.

    keras-hub's Gemma preprocessor takes no prompt/response pairs, so the mask is built here.
    """
    import tensorflow as tf

    tokenizer = preprocessor.tokenizer
    prompt_of = _render(dataset_cfg.prompt_template, "dataset.prompt_template", features)
    response_of = _render(dataset_cfg.response_template, "dataset.response_template", features)
    bos, eos, pad = tokenizer.start_token_id, tokenizer.end_token_id, tokenizer.pad_token_id
    width = sequence_length + 1
    add_eos = bool(dataset_cfg.add_eos)

    def pack(example):
        prompt = tf.cast(tokenizer(prompt_of(example)), "int32")
        response = tf.cast(tokenizer(response_of(example)), "int32")
        head = tf.concat([[bos], prompt], 0)
        tail = tf.concat([response, [eos]], 0) if add_eos else response
        ids = tf.concat([head, tail], 0)
        weights = tf.concat([tf.zeros_like(head, "float32"), tf.ones_like(tail, "float32")], 0)
        return fit_to_width(ids, weights, width, pad)

    return ds.map(pack, num_parallel_calls=tf.data.AUTOTUNE), True


def _chat(ds, dataset_cfg, features, preprocessor, sequence_length: int):
    """format=chat: runner.chat_data over the conversations' field."""
    return chat_examples(ds, dataset_cfg, messages_field(dataset_cfg, features),
                         preprocessor.tokenizer, sequence_length)


FORMATS = {f.name: f for f in (
    DataFormat("text", _text_problems, _text_examples),
    DataFormat("prompt_response", _prompt_response_problems, _prompt_response_examples),
    DataFormat("chat", _chat_problems, _chat),
    DataFormat("preference", preference_data.problems, preference_data.examples, 2,
               preference_data.pairs_to_rows),
)}

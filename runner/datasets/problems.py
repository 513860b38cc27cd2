"""What is wrong with the dataset group, found before any weight loads: splits and fields from
the dataset's own metadata, then, for a user's data, its records (a field some record lacks, an
unknown chat role), and for conversations every one rendered by the chat template. Every problem
is one line naming the key (or the file and line) and the fix."""

from __future__ import annotations

import string

from runner import chat
from runner.chat import ROLES
from runner.datasets.user_data import EVAL_SPLIT, WHERE


def split_problems(dataset_cfg, opened) -> list[str]:
    found = []
    if dataset_cfg.eval_files and dataset_cfg.eval_split is None:
        found.append(f"dataset.eval_files is set but dataset.eval_split is null; add "
                     f"dataset.eval_split={EVAL_SPLIT} (the eval files' split)")
    splits = opened.builder.info.splits
    for key in ("split", "eval_split"):
        split = getattr(dataset_cfg, key)
        if split is None:
            continue
        try:
            splits[split]  # also parses slices: train[:10%]
        except (KeyError, ValueError, AssertionError) as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            hint = (f"; dataset.files become split train, dataset.eval_files split {EVAL_SPLIT}"
                    if dataset_cfg.files else "")
            found.append(f"dataset.{key}={split!r} is not a split of {opened.label} ({first}); "
                         f"splits: {sorted(splits)}{hint}")
    return found


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def template_problems(key: str, template: str, features) -> list[str]:
    """A template naming a field the data lacks: typically a dataset group's templates (dolly's
    {instruction}) over a user's own files; the fix is the key, with the data's own fields."""
    fields = sorted(k for k in features if k != WHERE)
    example = f"; set {key} to a template of these, e.g. {key}='{{{fields[0]}}}'" if fields else ""
    return [f"{key}={template!r} names {{{f}}}, which is not a text field of this dataset; "
            f"fields: {fields}{example}" for f in template_fields(template) if f not in features]


def missing(opened, name: str, key: str) -> list[str]:
    """A user's records that lack a field the config reads (TFDS catalog datasets have every
    feature in every example)."""
    if opened.scan is None or name not in opened.scan.missing:
        return []
    where, count = opened.scan.missing[name]
    return [f"{where}: the record has no \"{name}\" field, which {key} reads ({count} record"
            f"{'s' * (count > 1)} lack it); add it or remove those records"]


def non_text(dataset_cfg, opened, name: str, key: str) -> list[str]:
    """A user's record whose field, read as text, holds a number, a list or an object: training
    on its JSON text silently is rarely what was meant (a column of ids read as the text, a
    list of answers where one was expected)."""
    if opened.scan is None or name not in opened.scan.non_text or dataset_cfg.stringify_values:
        return []
    where, text = opened.scan.non_text[name]
    shown = text if len(text) <= 40 else text[:37] + "..."
    return [f"{where}: \"{name}\" holds {shown}, not a string, and {key} reads it as text; "
            "write it as a string, or set dataset.stringify_values=true to train on such "
            "values' JSON text"]


def _is_chat_feature(feature) -> bool:
    import tensorflow_datasets as tfds

    return (isinstance(feature, tfds.features.Sequence)
            and isinstance(feature.feature, tfds.features.FeaturesDict)
            and {"role", "content"} <= set(feature.feature.keys()))


def messages_field(dataset_cfg, features) -> str:
    """dataset.messages_field; left at its default ("messages") on data that has no such field
    but exactly one field of conversations (ShareGPT's "conversations"), that one: such data
    needs no key set."""
    field = dataset_cfg.messages_field
    if field in features or field != "messages":
        return field
    chat_fields = [k for k, v in features.items() if k != WHERE and _is_chat_feature(v)]
    return chat_fields[0] if len(chat_fields) == 1 else field


_SHAPES = ('[{"role": ..., "content": ...}, ...] or ShareGPT\'s '
           '[{"from": "human"|"gpt"|"system", "value": ...}, ...]')


def chat_field_problems(dataset_cfg, opened, features) -> list[str]:
    field = messages_field(dataset_cfg, features)
    chat_fields = [k for k, v in features.items() if _is_chat_feature(v)]
    if field in features and not _is_chat_feature(features[field]):
        return [f"dataset.messages_field={field}: that field of {opened.label} holds text, not "
                f"a list of messages ({_SHAPES}); "
                + (f"set dataset.messages_field to one that does: {chat_fields}" if chat_fields
                   else "use format=text or prompt_response for such data")]
    if field not in features:
        return [f"dataset.messages_field={field} is not a field of {opened.label}; "
                + (f"its fields of messages: {chat_fields}" if chat_fields else
                   f"none of its fields {sorted(features)} holds a list of messages ({_SHAPES});"
                   " use format=text or prompt_response for such data")]
    found = missing(opened, field, "dataset.messages_field")
    for role, where in (opened.scan.roles.items() if opened.scan else ()):
        if role not in ROLES:
            found.append(f"{where}: a message has role {role!r}; the chat format takes "
                         f"{list(ROLES)} (a model's turns are 'assistant'); fix the record")
    return found


def conversation_problems(dataset_cfg, opened, family: str) -> list[str]:
    """Render every conversation the run reads; the first one the template refuses."""
    import tensorflow_datasets as tfds

    try:
        template = chat.template_for(family, dataset_cfg.chat_template)
    except ValueError as exc:
        return [str(exc)]
    field = messages_field(dataset_cfg, opened.builder.info.features)
    for split in dict.fromkeys(s for s in (dataset_cfg.split, dataset_cfg.eval_split) if s):
        ds = opened.builder.as_dataset(split=split, shuffle_files=False)
        if dataset_cfg.take:
            ds = ds.take(dataset_cfg.take)
        for i, example in enumerate(tfds.as_numpy(ds)):
            try:
                chat.render(messages_of(example[field]), template)
            except chat.ChatError as exc:
                where = (example[WHERE].decode() if WHERE in example
                         else f"{opened.label}[{split}] example {i + 1}")
                return [f"{where}: {exc}; fix the conversation or remove it"]
    return []


def messages_of(value) -> list[dict]:
    """A TFDS messages value (numpy: {"role": [bytes], "content": [bytes]}) as a list."""
    return [{"role": r.decode(), "content": c.decode()}
            for r, c in zip(value["role"], value["content"])]

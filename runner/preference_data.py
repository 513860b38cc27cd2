"""format=preference: prompt / chosen / rejected records -> pairs of token rows, and the checks
that refuse a record which cannot teach a preference (file:line, before any weight loads).

A record is read by runner.preference_records (TRL's shapes). Each pair becomes two rows of
train.sequence_length + 1 tokens, chosen then rejected: [bos] + prompt + answer (+ eos) for
text, the conversation prompt + answer rendered by the family's chat template for messages
(runner.chat, as format=chat renders it). The loss tokens (sample weight 1) are the answer's
only: for conversations, the answer's assistant turns as format=chat marks them (content and
end-of-turn token), not the prompt's own earlier assistant turns.

Truncation is TRL 1.16's (DPOConfig.max_length with truncation_mode keep_start): a row longer
than the sequence keeps its start, so the answer loses its end; a pair whose prompt leaves no
answer token in either row is left out (TRL drops those too) and counted in the split's line.
Batches hold train.batch_size pairs as 2 x batch_size rows, each pair's two rows side by side
(rows 2i and 2i + 1), so a device's rows hold whole pairs (runner/step.py's preference step).
"""

from __future__ import annotations

import numpy as np

from runner import chat
from runner.chat_data import family_of, rows_of_pieces, special_ids, tokens_of_rows
from runner.datasets.problems import WHERE, messages_of, missing
from runner.errors import UserError
from runner.fixed_width import fit_to_width
from runner.preference_records import RecordError, pair_of

FIELDS = ("prompt", "chosen", "rejected")


def _value(value):
    """A TFDS example's field (numpy) as text or a list of messages."""
    if isinstance(value, dict):
        return messages_of(value)
    return value.decode() if isinstance(value, bytes) else value


def record_of(example) -> dict:
    return {k: _value(example[k]) for k in FIELDS if k in example}


def problems(dataset_cfg, opened, features, family, splits_ok) -> list[str]:
    """Fields first, then every record the run reads: the first that pair_of refuses, or whose
    conversation the family's chat template cannot render."""
    import tensorflow_datasets as tfds

    if "chosen" not in features or "rejected" not in features:
        return [f"dataset.format=preference reads the fields prompt, chosen and rejected; "
                f"{opened.label} has {sorted(k for k in features if k != WHERE)}; use data with "
                "chosen and rejected (a prompt too, unless both hold the whole conversation)"]
    found = [line for name in FIELDS if name in features
             for line in missing(opened, name, "dataset.format=preference")]
    if found or not splits_ok:
        return found
    template = None
    for split in dict.fromkeys(s for s in (dataset_cfg.split, dataset_cfg.eval_split) if s):
        ds = opened.builder.as_dataset(split=split, shuffle_files=False)
        if dataset_cfg.take:
            ds = ds.take(dataset_cfg.take)
        for i, example in enumerate(tfds.as_numpy(ds)):
            where = (example[WHERE].decode() if WHERE in example
                     else f"{opened.label}[{split}] example {i + 1}")
            try:
                pair = pair_of(record_of(example), where)
                if pair.conversational and family is not None:
                    template = template or chat.template_for(family, dataset_cfg.chat_template)
                    for answer in (pair.chosen, pair.rejected):
                        chat.render(pair.prompt + answer, template)
            except RecordError as exc:
                return [f"{exc}; fix the record or remove it"]
            except chat.ChatError as exc:
                return [f"{where}: {exc}; fix the conversation or remove it"]
            except ValueError as exc:  # template_for: a template the family lacks
                return [str(exc)]
    return []


def _answer_turns_only(pieces: list, answer_turns: int) -> list:
    """The pieces with only the last `answer_turns` assistant turns trainable (a turn: a run of
    trainable pieces), so a multi-turn prompt's own assistant turns cost no loss."""
    runs, inside = [], False
    for i, p in enumerate(pieces):
        if p.trainable and not inside:
            runs.append(i)
        inside = p.trainable or (inside and not p.text)
    keep_from = runs[-answer_turns] if answer_turns <= len(runs) else 0
    return [p if i >= keep_from else chat.Piece(p.text, p.special, False)
            for i, p in enumerate(pieces)]


def side_rows(prompt, answer, template, ids: dict, add_eos: bool):
    """One side of a pair as chat_data's rows (texts, heads, special id or -1, trainable)."""
    if isinstance(answer, list):
        pieces = _answer_turns_only(chat.render(prompt + answer, template), len(answer))
        return rows_of_pieces(pieces, ids)
    # text: prompt and answer tokenized apart, as format=prompt_response and TRL do; no start
    # token where the tokenizer has none (Qwen's)
    bos = ids[chat.BOS] is not None
    texts = [b""] * bos + [prompt.encode(), answer.encode()] + [b""] * add_eos
    special = [ids[chat.BOS]] * bos + [-1, -1] + [ids[chat.EOS]] * add_eos
    trainable = [False] * bos + [False, True] + [True] * add_eos
    return (np.array(texts, object), np.array([b""] * len(texts), object),
            np.array(special, np.int32), np.array(trainable, bool))


def examples(ds, dataset_cfg, features, preprocessor, sequence_length: int):
    """((x, y, sample weight) with a leading axis of 2: chosen, rejected; the longer row's
    length; whether both rows keep an answer token) per record."""
    import tensorflow as tf

    tokenizer = preprocessor.tokenizer
    conversational = not _is_text(features["chosen"])
    template, ids = None, {chat.BOS: tokenizer.start_token_id, chat.EOS: tokenizer.end_token_id}
    if conversational:
        try:
            template = chat.template_for(family_of(tokenizer), dataset_cfg.chat_template)
            ids = special_ids(tokenizer, template)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    fields = [k for k in FIELDS if k in features]
    add_eos = bool(dataset_cfg.add_eos)
    width, pad = sequence_length + 1, tokenizer.pad_token_id

    def rows(*values):
        example = {}
        for name, value in zip(fields, values):
            example[name] = (value.decode() if isinstance(value, bytes) else
                             [{"role": r.decode(), "content": c.decode()} for r, c in value])
        pair = pair_of(example, "a record")  # checked before weights: cannot fail here
        return (*side_rows(pair.prompt, pair.chosen, template, ids, add_eos),
                *side_rows(pair.prompt, pair.rejected, template, ids, add_eos))

    def flat(example):
        """numpy_function takes flat tensors: a messages field as an (n, 2) string matrix."""
        out = []
        for name in fields:
            value = example[name]
            out.append(tf.stack([value["role"], value["content"]], axis=1)
                       if isinstance(value, dict) else value)
        return out

    def pack(example):
        outs = tf.numpy_function(rows, flat(example), [tf.string, tf.string, tf.int32, tf.bool] * 2,
                                 stateful=False)
        sides, lengths = [], []
        for k in (0, 4):
            texts, heads, special, trainable = outs[k:k + 4]
            for t in (texts, heads, special, trainable):
                t.set_shape([None])
            token_ids, weights = tokens_of_rows(texts, heads, special, trainable, tokenizer)
            triple, n = fit_to_width(token_ids, weights, width, pad)
            sides.append(triple)
            lengths.append(n)
        (xc, yc, wc), (xr, yr, wr) = sides
        x = {k: tf.stack([xc[k], xr[k]]) for k in xc}
        usable = tf.logical_and(tf.reduce_sum(wc) > 0, tf.reduce_sum(wr) > 0)
        return (x, tf.stack([yc, yr]), tf.stack([wc, wr])), tf.maximum(*lengths), usable

    return ds.map(pack, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), True


def _is_text(feature) -> bool:
    import tensorflow_datasets as tfds

    return isinstance(feature, tfds.features.Text)


def pairs_to_rows(*batch):
    """A batch of B pairs ((B, 2, L) each) -> 2B rows, pair i at rows 2i (chosen), 2i + 1."""
    import tensorflow as tf

    def rows(t):  # static shapes kept: the batch is split across devices and processes by them
        out = tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))
        out.set_shape([None if t.shape[0] is None else 2 * t.shape[0], *t.shape[2:]])
        return out
    return tf.nest.map_structure(rows, batch)

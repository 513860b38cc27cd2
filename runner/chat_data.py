"""format=chat in the data pipeline: conversations -> token ids with the loss on assistant turns.

runner.chat renders a conversation (Python, inside tf.numpy_function, once per example: the
pipeline caches what it yields) into rows: a special token, or a chunk of text with an
untrainable head. Each text chunk is tokenized whole, as a Hugging Face tokenizer tokenizes the
text between two special tokens; the head's own token count marks where the trained part starts.
"""

from __future__ import annotations

import numpy as np

from runner import chat
from runner.errors import UserError
from runner.families import name_of_prefix
from runner.fixed_width import fit_to_width


def family_of(tokenizer) -> str:
    """GemmaTokenizer -> gemma: the tokenizer's class names the family."""
    return name_of_prefix(type(tokenizer).__name__[: -len("Tokenizer")])


def special_ids(tokenizer, template: str) -> dict:
    """Name -> id of every special token the template uses, from the tokenizer's vocabulary;
    a ValueError naming any the tokenizer lacks."""
    try:
        pieces = chat.render(_SAMPLE, template)
    except chat.ChatError:  # a template with no system role
        pieces = chat.render(_SAMPLE[1:], template)
    names = {p.text for p in pieces if p.special}
    ids, lacking = {}, []
    for name in names:
        if name == chat.BOS:
            ids[name] = tokenizer.start_token_id
        elif name == chat.EOS:
            ids[name] = tokenizer.end_token_id
        else:
            try:
                ids[name] = int(tokenizer.token_to_id(name))
            except (KeyError, ValueError):
                lacking.append(name)
    if lacking or any(v is None for v in ids.values()):
        raise ValueError(f"dataset.chat_template={template}: the tokenizer has no "
                         f"{sorted(lacking) or 'start/end token'}; choose the model's own "
                         "template (dataset.chat_template=null) or a model trained with it")
    return ids


_SAMPLE = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
           {"role": "assistant", "content": "a"}]


def rows(roles, contents, template: str, ids: dict):
    """numpy in, numpy out: (texts, heads, special id or -1, trainable) per row."""
    messages = [{"role": r.decode(), "content": c.decode()} for r, c in zip(roles, contents)]
    return rows_of_pieces(chat.render(messages, template), ids)


def rows_of_pieces(pieces: list, ids: dict):
    """Rendered pieces -> rows() arrays."""
    table = chat.chunks(pieces)
    texts = np.array([b"" if special else t.encode() for t, _, special, _ in table], object)
    heads = np.array([h.encode() for _, h, _, _ in table], object)
    special = np.array([ids[t] if s else -1 for t, _, s, _ in table], np.int32)
    trainable = np.array([tr for _, _, _, tr in table], bool)
    return texts, heads, special, trainable


def token_ids_and_weights(example_messages, tokenizer, template: str, ids: dict):
    """One conversation ({"role": [n], "content": [n]} string tensors) -> (ids, weights)."""
    import tensorflow as tf

    texts, heads, special, trainable = tf.numpy_function(
        lambda r, c: rows(r, c, template, ids), [example_messages["role"],
                                                 example_messages["content"]],
        [tf.string, tf.string, tf.int32, tf.bool], stateful=False)
    texts.set_shape([None])
    heads.set_shape([None])
    special.set_shape([None])
    trainable.set_shape([None])
    return tokens_of_rows(texts, heads, special, trainable, tokenizer)


def tokens_of_rows(texts, heads, special, trainable, tokenizer):
    """rows() as tensors -> (ids, weights): each text chunk tokenized whole, its head's own
    token count untrained."""
    import tensorflow as tf

    text_tokens = tf.cast(tokenizer(texts), "int32")  # ragged [rows, None]; "" gives []
    head_lengths = tf.cast(tokenizer(heads).row_lengths(), "int32")
    is_special = special >= 0
    special_tokens = tf.RaggedTensor.from_row_lengths(
        tf.boolean_mask(special, is_special), tf.cast(is_special, "int64"))
    tokens = tf.concat([special_tokens, text_tokens], axis=1)
    position = tf.ragged.range(tf.cast(tokens.row_lengths(), "int32"))
    trained = tf.logical_and(position >= tf.expand_dims(head_lengths, 1),
                             tf.expand_dims(trainable, 1))
    return tokens.flat_values, tf.cast(trained.flat_values, "float32")


def chat_examples(ds, dataset_cfg, field: str, tokenizer, sequence_length: int):
    """format=chat: ((x, y, sample weight), length) per conversation (in `field`: see
    runner.datasets.problems.messages_field), packed to sequence_length + 1."""
    import tensorflow as tf

    try:
        template = chat.template_for(family_of(tokenizer), dataset_cfg.chat_template)
        ids = special_ids(tokenizer, template)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    width, pad = sequence_length + 1, tokenizer.pad_token_id

    def pack(example):
        token_ids, weights = token_ids_and_weights(example[field], tokenizer, template, ids)
        return fit_to_width(token_ids, weights, width, pad)

    return ds.map(pack, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True), True

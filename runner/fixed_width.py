"""One tokenized example -> the fixed-width training triple every data format ends in (token
ids and padding mask, shifted targets, loss weights), shared by the plain, prompt/response and
chat formats (runner/data.py, runner/chat_data.py)."""

from __future__ import annotations


def fit_to_width(ids, weights, width: int, pad: int):
    """Token ids and their loss weights -> ((x, y, sample weight), length) at `width` tokens:
    cut or padded, the targets shifted by one, the weight that of the target token; `length` is
    the example's own, before any cut."""
    import tensorflow as tf

    n = tf.shape(ids)[0]
    ids, weights = ids[:width], weights[:width]
    pad_len = width - tf.shape(ids)[0]
    ids = tf.pad(ids, [[0, pad_len]], constant_values=pad)
    weights = tf.pad(weights, [[0, pad_len]])
    mask = tf.range(width) < tf.minimum(n, width)
    x = {"token_ids": ids[:-1], "padding_mask": mask[:-1]}
    return (x, ids[1:], weights[1:]), n

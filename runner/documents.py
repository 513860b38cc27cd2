"""Packed rows to a keras-hub model: attention within each document, positions from each
document's start.

keras-hub's decoder blocks build their attention mask from the padding mask alone (causal,
plus Gemma's and Mistral's sliding windows), and their rotary embeddings count positions from
the row's start; neither takes segment ids. `prepare(backbone)` moves the backbone's decoder
blocks and rotary embeddings to subclasses (made once per class, the same weights and names)
that, while `documents(segment_ids, positions)` is open, AND the block's own mask with "same
document" and rotate by each token's position in its document. Outside the context they are
keras-hub's own. The step opens the context around the backbone's call when a batch carries
segment ids (dataset.packing=true); the sliding windows then apply within a document as well,
and Gemma's soft-capping is untouched (it acts on the scores, not the mask).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

SEGMENT_IDS, POSITIONS = "segment_ids", "positions"  # the batch keys a packed stream adds
# the attention-mask methods of keras-hub's decoder blocks (Gemma's; the others')
_MASK_METHODS = ("_compute_attention_mask", "_compute_self_attention_mask")
_CURRENT = contextvars.ContextVar("runner_documents", default=None)


@contextlib.contextmanager
def documents(segment_ids, positions):
    """While open, prepared layers mask attention across documents and use these positions:
    (batch, length) arrays; segment 0 is padding."""
    token = _CURRENT.set((segment_ids, positions))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def split(x: dict):
    """(the model's own inputs, (segment ids, positions) or None) from a batch's x."""
    if SEGMENT_IDS not in x:
        return x, None
    rest = {k: v for k, v in x.items() if k not in (SEGMENT_IDS, POSITIONS)}
    return rest, (x[SEGMENT_IDS], x[POSITIONS])


def prepare(backbone) -> int:
    """Make the backbone's decoder blocks and rotary embeddings follow `documents`; returns how
    many layers it changed. Raises if a backbone has no block with a known mask method (a
    family keras-hub changed): packing must never silently attend across documents."""
    from keras_hub.layers import RotaryEmbedding

    blocks = 0
    for layer in backbone._flatten_layers(include_self=False):
        method = next((m for m in _MASK_METHODS if hasattr(layer, m)), None)
        if method is not None:
            layer.__class__ = _masked_class(type(layer), method)
            blocks += 1
        elif isinstance(layer, RotaryEmbedding):
            layer.__class__ = _positioned_class(type(layer))
    if not blocks:
        raise RuntimeError(f"{type(backbone).__name__}: no decoder block with "
                           f"{' or '.join(_MASK_METHODS)}; dataset.packing cannot mask it")
    return blocks


@functools.cache
def _masked_class(cls, method: str):
    from keras import ops

    own = getattr(cls, method)

    def masked(self, *args, **kwargs):
        mask = own(self, *args, **kwargs)
        current = _CURRENT.get()
        if current is None or mask is None:
            return mask
        segments = current[0]
        same = ops.equal(ops.expand_dims(segments, 2), ops.expand_dims(segments, 1))
        return ops.cast(ops.logical_and(ops.cast(mask, "bool"), same), mask.dtype)
    if cls.__dict__.get("_runner_documents"):
        return cls
    return type(cls.__name__, (cls,), {method: masked, "_runner_documents": True,
                                       "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


@functools.cache
def _positioned_class(cls):
    if cls.__dict__.get("_runner_documents"):
        return cls

    def call(self, inputs, start_index=0, positions=None):
        current = _CURRENT.get()
        if current is not None and positions is None:
            positions = current[1]
        return cls.call(self, inputs, start_index=start_index, positions=positions)
    return type(cls.__name__, (cls,), {"call": call, "_runner_documents": True,
                                       "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})

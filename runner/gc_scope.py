"""Keras's per-variable garbage collections, made one.

Keras's Layer.__delattr__ runs a full gc.collect() each time a layer drops a variable, to hurry
the release of its device buffer (keras/src/layers/layer.py). Quantizing drops one float kernel
per linear layer (Keras's int8 and the runner's 4-bit alike), so a model ran one full
collection per layer, each scanning the whole Python heap: tiny Gemma's int8 plan spent 16 s of
its 28 s in 61 collections, and a process holding more objects (a test worker late in the
suite, 4x slower) spends proportionally more. A dropped kernel is freed by its reference count
at once (no reference cycle holds it: checked on tiny Gemma's 28 kernels), so the collections
release nothing; inside this scope they do nothing, and one collection at its end does what
they were for.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def one_collection():
    """gc.collect() does nothing inside; it runs once when the scope ends. The whole process
    sees this (gc.collect is the gc module's), so keep the scope to model building."""
    import gc

    collect = gc.collect
    gc.collect = _no_collection
    try:
        yield
    finally:
        gc.collect = collect
        collect()  # a nested scope's end calls _no_collection: the outermost one collects


def _no_collection(generation: int = 2) -> int:
    return 0

"""train.remat=blocks: every transformer block one jax.checkpoint, for every family.

Keras's RematScope(mode="list_of_layers") wraps a named layer's whole call in jax.checkpoint, so
every argument becomes a traced value, the Python ones too: `training=True`, a cache index of
None or 0. A block that branches on one in Python (Llama's, Mistral's and Qwen's decoders pass
`training` to a Dropout, which asks `if training`) then fails to trace ("Attempted boolean
conversion"), and `train.remat=blocks` could not train those families. Here only the array
arguments are traced; the others are closed over as the constants they are, as jax.checkpoint's
static_argnums would make them. Keras's scope still marks which layers (Operation.__init__
records it), so the run, the plan and --compile remat the same blocks.
"""

from __future__ import annotations

import contextlib

_KERAS_OWN = []  # Layer.rematerialized_call as Keras defines it, once replaced


def _traced(value) -> bool:
    import jax

    return any(isinstance(leaf, (jax.Array, jax.core.Tracer)) for leaf in jax.tree.leaves(value))


def checkpointed(layer_call):
    """jax.checkpoint of `layer_call` over its array arguments only."""
    import jax

    def call(*args, **kwargs):
        positions = [i for i, a in enumerate(args) if _traced(a)]
        names = [k for k, v in kwargs.items() if _traced(v)]

        def inner(arrays, keyed):
            full = list(args)
            for i, value in zip(positions, arrays):
                full[i] = value
            return layer_call(*full, **{**kwargs, **keyed})
        return jax.checkpoint(inner)([args[i] for i in positions],
                                     {k: kwargs[k] for k in names})
    return call


def _rematerialized_call(self, layer_call, *args, **kwargs):
    mode = getattr(self, "_remat_mode", None)
    if mode is not None and mode.mode == "list_of_layers" and self.name in mode.layer_names:
        return checkpointed(layer_call)
    return _KERAS_OWN[0](self, layer_call, *args, **kwargs)


def install() -> None:
    """Route the layers a list_of_layers RematScope names through `checkpointed` (idempotent;
    other remat modes stay Keras's own)."""
    from keras.src.layers.layer import Layer

    if not _KERAS_OWN:
        _KERAS_OWN.append(Layer.rematerialized_call)
        Layer.rematerialized_call = _rematerialized_call


def block_scope(block_names):
    """The scope to build a model in so that the blocks `block_names` are rematerialised."""
    if not block_names:
        return contextlib.nullcontext()
    import keras

    install()
    return keras.RematScope(mode="list_of_layers", layer_names=list(block_names))

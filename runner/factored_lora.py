"""LoRA computed as PEFT computes it: x @ W + (alpha / rank) * (x @ A) @ B, with W frozen.

Keras's Dense and EinsumDense with LoRA read their `kernel` property in the forward pass, and
that property merges: W + (alpha / rank) * A @ B, a full-size kernel built every step, so the
backward pass computes a full-size kernel gradient for every adapted layer (only to pass it on
to A and B), as full fine-tuning would. Keras's own int8 path already computes LoRA factored;
this gives the float path (and the runner's 4-bit layers, runner/nf4_layers.py) the same form. `kernel` itself still merges, so merging,
saving and exporting the adapter are unchanged.

Layers are moved to a subclass of their own class (the same weights, names and config), made
once per class: keras-hub builds its layers, so the runner cannot choose their class.
"""

from __future__ import annotations

import functools


def factor(layers) -> list:
    """Make each LoRA-enabled Dense or EinsumDense in `layers` compute LoRA factored; returns
    the layers it changed. A layer whose equation does not end in the kernel's last axis (none
    of the families' LoRA targets) keeps Keras's merged kernel; a quantized one keeps Keras's
    quantized call (which computes LoRA factored itself)."""
    changed = []
    for layer in layers:
        cls = factored_class(type(layer))
        if cls is not None and getattr(layer, "lora_enabled", False) and _factorable(layer):
            layer.__class__ = cls
            if getattr(layer, "quantization_mode", None) is None:
                changed.append(layer)
    return changed


def add_dropout(layers, rate: float) -> None:
    """LoRA dropout on each factored layer's (from factor) branch input, in training only (PEFT's
    lora_dropout). Each layer draws its masks from its own seed generator, seeded from the
    run's seed (keras.utils.set_random_seed), its state a variable beside the layer's
    (PATH/lora_dropout/seed_generator_state) that checkpoints keep: a rerun or a resumed run
    draws the same masks."""
    import contextlib

    import keras

    for layer in layers:
        layer._tracker.unlock()  # Keras locks a built layer's state; enable_lora does the same
        with contextlib.ExitStack() as scopes:  # a name scope is one path part
            for part in layer.path.split("/"):
                scopes.enter_context(keras.name_scope(part))
            layer.lora_dropout_seed = keras.random.SeedGenerator(name="lora_dropout")
        layer._tracker.lock()
        layer.lora_dropout = float(rate)


def _factorable(layer) -> bool:
    equation = getattr(layer, "equation", None)
    if equation is None:  # Dense: x @ W
        return True
    inputs, output = equation.split("->")
    kernel = inputs.split(",")[1]
    # einsum(x, A) must put the rank where the kernel's last axis was: the output's last axis
    return output.strip()[-1:] == kernel.strip()[-1:]


@functools.cache
def factored_class(cls):
    """`cls` (Dense or EinsumDense) computing LoRA factored; None for other classes."""
    import keras

    if not issubclass(cls, (keras.layers.EinsumDense, keras.layers.Dense)):
        return None

    def call(self, inputs, training=None):
        if not self.lora_enabled:
            return cls.call(self, inputs, training=training)
        return own_call(self, inputs, training)

    def frozen_product(self, inputs):  # runner/nf4_layers.py: over the NF4 base dequantized
        return product(self, inputs, self._kernel)

    # the same registered name, so a saved config reads back as Keras's own class
    return type(cls.__name__, (cls,), {"call": call, "frozen_product": frozen_product,
                                       "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def product(layer, inputs, kernel):
    """The layer's own contraction of `inputs` with `kernel` (its kernel, or LoRA's A)."""
    import keras

    if isinstance(layer, keras.layers.EinsumDense):
        return keras.ops.einsum(layer.equation, inputs, kernel)
    return keras.ops.matmul(inputs, kernel)


def own_call(layer, inputs, training):
    """The frozen path (layer.frozen_product), LoRA's branch when enabled, bias, activation."""
    import keras

    x = layer.frozen_product(inputs)
    if layer.lora_enabled:
        branch = inputs  # PEFT: lora_B(lora_A(dropout(x))), the frozen path untouched
        rate = getattr(layer, "lora_dropout", 0.0)
        if training and rate:
            branch = keras.random.dropout(inputs, rate, seed=layer.lora_dropout_seed)
        update = keras.ops.matmul(product(layer, branch, layer.lora_kernel_a),
                                  layer.lora_kernel_b)
        x = keras.ops.add(x, (layer.lora_alpha / layer.lora_rank) * update)
    if layer.bias is not None:
        x = keras.ops.add(x, layer.bias)
    if layer.activation is not None:
        x = layer.activation(x)
    return x

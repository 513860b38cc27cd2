"""quant=nf4 and quant=int4: the frozen base's linear layers stored in 4 bits, as NF4
(runner/nf4.py) or Keras's int4 (runner/int4.py), and dequantized inside the step, as
bitsandbytes' Linear4bit does under QLoRA.

Which layers: every Dense and EinsumDense of the blocks (as transformers quantizes every
nn.Linear but the output layer); the token embedding stays in the model's dtype.

Which values share a block: bitsandbytes quantizes a transformers weight (out_features,
in_features) flattened row by row, so a block is 64 consecutive inputs of one output unit. A
Keras kernel holds the same numbers in another order ((in, out) for Dense; for EinsumDense the
equation's axes, e.g. Gemma's query (heads, hidden, head_dim)). Each kernel is read as that
2-D view, (the kernel's output axes, in kernel order) x (its contracted axes, in kernel
order), which is the transformers weight for every family the runner converts: the blocks, and
so every stored value, are bitsandbytes' for the same weights.

What is stored, per layer (under its path, beside LoRA's variables):
    nf4_codes         uint8 (out, in / 2)   two 4-bit codes a byte, the first in the high nibble
    nf4_absmax_codes  uint8 (out, in / block)   the blocks' maxima in 8 bits (double_quant)
                      or nf4_absmax float32 (out, in / block) without double quantization
    nf4_scale         float32 (ceil(out x in / block / 256),)   one per 256 maxima, replicated
    nf4_offset        float32 ()   the maxima's mean, replicated
or, with quant=int4,
    int4_codes        uint8 (out, in / 2)   two 4-bit codes a byte (code + 8), the first high
    int4_scale        float32 (out, in / block)   the groups' scales
    int4_zero         int8 (out, in / block)   the groups' zero points
The codes and statistics keep the 2-D view's rows and columns, so they split over the mesh as the
kernel's output and contracted axes do (runner.plan.nf4_plan maps the specs).

The step dequantizes each kernel when its layer runs (XLA fuses the lookups into the matmul's
operand) into quant.compute_dtype; the layer's input is cast to it and the product cast back to
the layer's dtype, as Linear4bit casts to bnb_4bit_compute_dtype and back.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from runner import int4, nf4
from runner.factored_lora import factored_class, own_call, product
from runner.gc_scope import one_collection
from runner.plan import layer_pattern

VARIABLES = ("nf4_codes", "nf4_absmax_codes", "nf4_absmax", "nf4_scale", "nf4_offset",
             "int4_codes", "int4_scale", "int4_zero")
CODES = ("nf4_codes", "int4_codes")  # the variable of each format that holds a code per value
FORMATS = ("nf4", "int4")  # the quant modes stored here


@dataclass(frozen=True)
class View:
    """How a kernel reads as a transformers weight: `order` the kernel axes, output axes first;
    `outputs` how many of them are output axes."""
    order: tuple
    outputs: int

    def rows_and_columns(self, shape) -> tuple[int, int]:
        dims = [shape[i] for i in self.order]
        return math.prod(dims[:self.outputs]), math.prod(dims[self.outputs:])


def view(layer) -> View:
    """The kernel's 2-D reading (see the module's docstring)."""
    equation = getattr(layer, "equation", None)
    if equation is None:  # Dense: (in, out)
        return View(order=(1, 0), outputs=1)
    inputs, output = equation.replace(" ", "").split("->")
    first, kernel = inputs.split(",")
    outs = [i for i, a in enumerate(kernel) if a in output]
    contracted = [i for i, a in enumerate(kernel) if a in first and a not in output]
    if len(outs) + len(contracted) != len(kernel):  # an axis neither summed nor kept
        raise ValueError(f"{layer.path}: equation {equation} has a kernel axis NF4 cannot "
                         "read as inputs or outputs")
    return View(order=tuple(outs + contracted), outputs=len(outs))


def quantizable_layers(backbone) -> list:
    """The layers quant=nf4 stores as NF4: every Dense and EinsumDense (not the embedding)."""
    import keras

    return [layer for layer in backbone._flatten_layers(include_self=False)
            if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))
            and getattr(layer, "_kernel", None) is not None]


def problems(backbone, block: int, mode: str = "nf4") -> list[str]:
    """What keeps this backbone's layers from quant=`mode` at `block`: one line per layer
    pattern."""
    found = {}
    for layer in quantizable_layers(backbone):
        try:
            rows, columns = view(layer).rows_and_columns(layer._kernel.shape)
        except ValueError as exc:
            found.setdefault(layer_pattern(layer.path), str(exc))
            continue
        if columns % block:
            found.setdefault(layer_pattern(f"{layer.path}/kernel"), (
                f"quant={mode}: {layer_pattern(layer.path + '/kernel')} has {columns} inputs "
                f"per output, which do not divide into quant.block_size={block}; use a block "
                f"size that divides {columns} (32 at the least), or quant=int8"))
    return list(found.values()) + outside_problems(backbone, mode)


def outside_problems(backbone, mode: str) -> list[str]:
    """quant=`mode` (nf4, int4 or Keras's int8) quantizes Dense and EinsumDense layers only: a
    matrix of the blocks held elsewhere (Mixtral's expert bank, most of that model) would stay
    in full precision without a word. One line, or none."""
    outside = list(dict.fromkeys(layer_pattern(p) for p in _outside_linear_layers(backbone)))
    if not outside:  # one line: Mixtral has three such patterns per block name
        return []
    more = f" and {len(outside) - 1} more" if len(outside) > 1 else ""
    which = "Keras's int8 does not quantize" if mode == "int8" else \
        "the runner cannot store in 4 bits"
    return [f"quant={mode}: {outside[0]}{more} are matrices of the blocks outside any Dense or "
            f"EinsumDense layer (as Mixtral's expert bank), which {which} and would keep in "
            "full precision; use quant=none"]


def _outside_linear_layers(backbone) -> list[str]:
    """Paths of the backbone's matrices that no linear layer (nor the embedding) holds."""
    import keras

    held = tuple(f"{layer.path}/" for layer in backbone._flatten_layers(include_self=False)
                 if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense,
                                       keras.layers.Embedding)))
    return [v.path for v in backbone.weights if len(v.shape) >= 2 and not v.path.startswith(held)]


def quantize(backbone, quant_cfg, abstract: bool = False) -> list:
    """Store every quantizable layer of `backbone` in quant_cfg.mode's 4 bits (its float kernel
    dropped) and make it dequantize in its call; returns the layers. Call after LoRA is enabled
    (enable_lora reads the float kernel's shape) and inside the distribution's scope. `abstract`: the plan's model
    under a no-memory scope: the variables get their shapes, nothing is computed."""
    layers = quantizable_layers(backbone)
    mode = str(quant_cfg.mode)
    with one_collection():  # Keras collects garbage for each kernel dropped: once for all
        for layer in layers:
            _quantize_layer(layer, _Layout(tuple(layer._kernel.shape), view(layer), mode,
                                           int(quant_cfg.block_size),
                                           mode == "nf4" and bool(quant_cfg.double_quant),
                                           str(quant_cfg.compute_dtype)), abstract)
    return layers


def _stored(kernel, layout: "_Layout") -> dict:
    """The stored variables' values for a float kernel."""
    import jax.numpy as jnp

    rows, columns = layout.view.rows_and_columns(kernel.shape)
    weight = jnp.transpose(kernel, layout.view.order).reshape(rows, columns)
    block, double = layout.block, layout.double
    if layout.format == "int4":
        q = int4.quantize(weight, block)
        return {"int4_codes": q.codes, "int4_scale": q.scale, "int4_zero": q.zero}
    q = nf4.quantize(weight, block, double)
    values = {"nf4_codes": q.codes.reshape(rows, columns // 2)}
    if double:
        values.update(nf4_absmax_codes=q.absmax_codes.reshape(rows, columns // block),
                      nf4_scale=q.scale, nf4_offset=q.offset)
    else:
        values["nf4_absmax"] = q.absmax.reshape(rows, columns // block)
    return values


def _shapes(layout: "_Layout") -> dict:
    rows, columns = layout.view.rows_and_columns(layout.kernel_shape)
    block, double = layout.block, layout.double
    if layout.format == "int4":
        return {"int4_codes": ((rows, columns // 2), "uint8"),
                "int4_scale": ((rows, columns // block), "float32"),
                "int4_zero": ((rows, columns // block), "int8")}
    maxima = rows * columns // block
    shapes = {"nf4_codes": ((rows, columns // 2), "uint8")}
    if double:
        shapes.update(nf4_absmax_codes=((rows, columns // block), "uint8"),
                      nf4_scale=((-(-maxima // nf4.STATS_BLOCK),), "float32"),
                      nf4_offset=((), "float32"))
    else:
        shapes["nf4_absmax"] = ((rows, columns // block), "float32")
    return shapes


def _quantize_layer(layer, layout: "_Layout", abstract: bool):
    kernel = None if abstract else layer._kernel.value
    layer._tracker.unlock()
    del layer._kernel  # Keras untracks it; its memory goes with the last reference
    for name, (var_shape, dtype) in _shapes(layout).items():
        setattr(layer, name, layer.add_weight(name=name, shape=var_shape, dtype=dtype,
                                              initializer="zeros", trainable=False,
                                              autocast=False))
    layer._tracker.lock()
    layer.four_bit = layout
    layer.__class__ = nf4_class(type(layer))
    if kernel is not None:
        store(layer, kernel)


def store(layer, kernel) -> None:
    """Quantize `kernel` (the layer's float kernel, in its own shape and dtype) into the 4-bit
    layer's variables: how runner/nf4_loading.py loads a base one layer at a time. Compiled
    with each variable's own placement as the output's, so every device computes its part and
    nothing is moved after (once per kind of layer)."""
    names = tuple(_shapes(layer.four_bit))
    shardings = tuple(getattr(layer, name).value.sharding for name in names)
    values = _quantizer(layer.four_bit, names, shardings)(kernel)
    for name, value in zip(names, values):
        getattr(layer, name).assign(value)


@functools.lru_cache(maxsize=None)
def _quantizer(layout: "_Layout", names: tuple, shardings: tuple):
    import jax

    def quantized(kernel):
        values = _stored(kernel, layout)
        return tuple(values[name] for name in names)
    return jax.jit(quantized, out_shardings=shardings)


@dataclass(frozen=True)
class _Layout:
    kernel_shape: tuple
    view: View
    format: str  # "nf4" or "int4"
    block: int
    double: bool
    compute_dtype: str


def _stored_values(layer) -> tuple:
    """The layer's stored 4-bit variables' values (in a step, the values it is run with)."""
    import jax.numpy as jnp

    # VARIABLES' order, those the layer has: codes, maxima (8-bit or float32), scale, offset
    return tuple(jnp.asarray(getattr(layer, name).value) for name in VARIABLES
                 if hasattr(layer, name))


def _dequantized(layout: "_Layout", stored: tuple):
    """The (rows, columns) view's values in the compute dtype, from stored values."""
    if layout.format == "int4":
        codes, scale, zero = stored
        return int4.dequantize(int4.Quantized(codes=codes, scale=scale, zero=zero),
                               layout.compute_dtype, layout.block)
    if layout.double:
        codes, absmax_codes, scale, offset = stored
        q = nf4.Quantized(codes=codes, absmax_codes=absmax_codes, scale=scale, offset=offset)
    else:
        codes, absmax = stored
        q = nf4.Quantized(codes=codes, absmax=absmax)
    return nf4.dequantize(q, layout.compute_dtype, layout.block)


def _kernel_of(layout: "_Layout", stored: tuple):
    """The kernel, in its own shape, dequantized to the compute dtype, from stored values."""
    import jax.numpy as jnp

    order = layout.view.order
    permuted = _dequantized(layout, stored).reshape([layout.kernel_shape[i] for i in order])
    return jnp.transpose(permuted, tuple(order.index(i) for i in range(len(order))))


def dequantized_kernel(layer):
    """The layer's kernel, in its own shape, dequantized to quant.compute_dtype."""
    return _kernel_of(layer.four_bit, _stored_values(layer))


def _frozen_product(layer, inputs):
    """inputs x the dequantized kernel, in the compute dtype, the result in the inputs' dtype.
    Under jax.checkpoint: the backward pass (the inputs' gradient needs the kernel) dequantizes
    again from the 4-bit codes instead of keeping every layer's dequantized kernel from the
    forward pass, which would hold the whole base in the compute dtype during the step (as
    bitsandbytes' MatMul4Bit keeps the quantized weight and dequantizes in its backward)."""
    import jax

    dtype = inputs.dtype
    layout = layer.four_bit

    def contract(x, *stored):
        return product(layer, x.astype(layout.compute_dtype),
                       _kernel_of(layout, stored)).astype(dtype)
    return jax.checkpoint(contract)(inputs, *_stored_values(layer))


@functools.cache
def nf4_class(cls):
    """`cls` (a Dense or EinsumDense, LoRA factored or not) over an NF4 kernel."""
    import keras

    base = cls if getattr(cls, "frozen_product", None) else factored_class(cls)

    def frozen_product(self, inputs):
        return _frozen_product(self, inputs)

    def call(self, inputs, training=None):
        return own_call(self, inputs, training)

    def kernel(self):
        """The dequantized kernel (with LoRA merged in when enabled, as Keras's property); while
        the model loads, the loader's stand-in for the float kernel (runner/nf4_loading.py)."""
        sink = getattr(self, "nf4_sink", None)
        if sink is not None:
            return sink
        merged = dequantized_kernel(self)
        if self.lora_enabled:
            update = keras.ops.matmul(self.lora_kernel_a, self.lora_kernel_b)
            merged = merged + keras.ops.cast((self.lora_alpha / self.lora_rank) * update,
                                             merged.dtype)
        return merged

    def load_own_variables(self, store):
        """Keras's weights file (a keras-hub preset): the float kernel, quantized as it is read,
        and the bias. The layer's LoRA variables keep their values (Keras's own zeroes them)."""
        sink = getattr(self, "nf4_sink", None)
        if sink is None:
            raise RuntimeError(f"{self.path}: a 4-bit layer reads a weights file only while "
                               "runner.nf4_loading loads the model")
        expected = 1 if self.bias is None else 2
        if len(store.keys()) != expected:  # Keras's own check, which this override replaces
            raise ValueError(f"{self.path}: the weights file holds {len(store.keys())} values "
                             f"for this layer, not its float kernel{' and bias' * (expected - 1)}"
                             " (a quantized preset?); load a full-precision preset")
        sink.assign(store["0"])
        if self.bias is not None:
            self.bias.assign(store["1"])

    return type(base.__name__, (base,), {"call": call, "frozen_product": frozen_product,
                                         "kernel": property(kernel),
                                         "load_own_variables": load_own_variables,
                                         "__module__": base.__module__,
                                         "__qualname__": base.__qualname__})

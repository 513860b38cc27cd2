"""quant=int4: Keras's own int4 (keras.quantizers.abs_max_quantize_grouped_with_zero_point, what
Keras 3.15's Dense/EinsumDense.quantize("int4") applies with its default block of 128), stored
the way the runner stores NF4 so that it splits over the mesh like the float kernel.

A weight, read as (outputs, inputs), is quantized in groups of `block` consecutive inputs of
one output: per group a scale (max - min + epsilon) / 15 and a zero point
clip(round(-min / scale) - 8, -8, 7); each value becomes clip(round(value / scale) + zero, -8, 7)
and reads back as (code - zero) x scale. The arithmetic is float32 (a bfloat16 kernel is
quantized from its float32 values); Keras's numpy path computes in the kernel's own dtype.
With float32 kernels the codes and zero points are Keras's and the scales within one float32
step of Keras's (XLA:CPU's division is not always correctly rounded, numpy's is), and
dequantizing Keras's own stored state gives its int4 Dense's kernel bit for bit
(tests/test_int4.py); with bfloat16 kernels Keras rounds each step to bfloat16 and this does
not.

Written here rather than taken from Keras: Keras packs the codes along the kernel's last axis
(for Dense its outputs, which a model axis splits) and flattens EinsumDense kernels into a
2-D shape no layout map of the families describes, so its int4 cannot be split as the layout
says. Here the codes keep the (outputs, inputs) rows and columns, two to a byte along the
inputs, as NF4's do (runner/nf4_layers.py).
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK = 128  # Keras 3.15's Int4QuantizationConfig default block_size
LOW, HIGH = -8, 7  # Keras's value_range for int4
EPSILON = 1e-7  # keras.backend.epsilon(), as Keras's quantizer adds it


@dataclass(frozen=True)
class Quantized:
    """One (rows, columns) weight as int4: `codes` uint8 (rows, columns / 2), code + 8 in each
    nibble, the first in the high one; `scale` float32 and `zero` int8 (rows, columns / block)."""
    codes: object
    scale: object
    zero: object


def bits_per_value(block: int = BLOCK) -> float:
    return 4 + (32 + 8) / block


def quantize(weight, block: int = BLOCK) -> Quantized:
    """Int4 codes of a (rows, columns) weight, groups of `block` along the columns (which it
    divides)."""
    import jax.numpy as jnp

    rows, columns = weight.shape
    if columns % block:
        raise ValueError(f"{columns} inputs do not divide into blocks of {block}")
    groups = weight.astype(jnp.float32).reshape(rows, columns // block, block)
    low = jnp.min(groups, axis=-1, keepdims=True)
    high = jnp.max(groups, axis=-1, keepdims=True)
    scale = (high - low + jnp.float32(EPSILON)) / jnp.float32(HIGH - LOW)
    zero = jnp.clip(jnp.round(-low / scale) + LOW, LOW, HIGH)
    codes = jnp.clip(jnp.round(groups / scale) + zero, LOW, HIGH).reshape(rows, columns)
    nibbles = (codes - LOW).astype(jnp.uint8)
    return Quantized(codes=(nibbles[:, 0::2] << 4) | nibbles[:, 1::2], scale=scale[..., 0],
                     zero=zero[..., 0].astype(jnp.int8))


def codes_of(q: Quantized):
    """The signed codes (rows, columns), int8."""
    import jax.numpy as jnp

    nibbles = jnp.stack([q.codes >> 4, q.codes & 0xF], axis=-1)
    return (nibbles.reshape(q.codes.shape[0], -1).astype(jnp.int8) + jnp.int8(LOW))


def dequantize(q: Quantized, dtype="bfloat16", block: int = BLOCK):
    """The (rows, columns) weight in `dtype`: (code - zero) x scale, in float32, then cast."""
    import jax.numpy as jnp

    codes = codes_of(q).astype(jnp.float32)
    rows = codes.shape[0]
    groups = codes.reshape(rows, -1, block) - q.zero.astype(jnp.float32)[..., None]
    return (groups * q.scale[..., None]).reshape(rows, -1).astype(dtype)

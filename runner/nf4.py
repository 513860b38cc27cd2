"""NF4 with double quantization, as bitsandbytes stores a QLoRA base (quantize_4bit with
quant_type="nf4", compress_statistics=True), in JAX.

A weight's values, in blocks of 64 consecutive values (`block`), are each scaled by their
block's absolute maximum and replaced by the nearest of NF4's 16 values (the QLoRA paper's
normal-quantile code, `NF4_CODE`), two 4-bit codes to a byte, the first in the high nibble.
Double quantization stores the blocks' maxima themselves in 8 bits: their mean (`offset`) is
taken off, and the centered maxima, in blocks of 256 (`STATS_BLOCK`), are scaled by their own
absolute maximum (`scale`, float32) and replaced by the nearest of bitsandbytes' 256-value dynamic
code (`DYNAMIC_CODE`). Bits per value: 4 + 8 / 64 + 32 / (64 x 256) = 4.127.

Dequantization is bitsandbytes' dequantize_4bit: maxima = dynamic[code] x scale + offset, in
float32; value = NF4[code] x maximum in float32, then cast to the compute dtype.

Written here, not taken from bitsandbytes: bitsandbytes is a PyTorch library, and the runner's
step runs in JAX on any accelerator. tests/test_nf4.py holds this file to bitsandbytes 0.50.2:
the 4-bit codes are its own byte for byte, and dequantizing its stored state gives its values
bit for bit. The stored maxima are the nearest 8-bit codes, as its CUDA kernel and PyTorch
fallback take them; its CPU kernel now and then takes the neighbour of a value on a midpoint,
and the offset (a float32 mean) may differ in its last bits by summation order: the test
bounds what that does to the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BLOCK = 64  # values per absolute maximum: bitsandbytes' default, the QLoRA paper's
STATS_BLOCK = 256  # maxima per scale under double quantization (bitsandbytes' fixed 256)

# bitsandbytes.functional.get_4bit_type("nf4"): create_normal_map(offset=0.9677083), sorted
NF4_CODE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)

# bitsandbytes.functional.create_dynamic_map() (signed, 7 exponent bits, 8 bits), sorted: the
# code double quantization stores the blocks' maxima in (tests/test_nf4.py checks it is theirs)
DYNAMIC_CODE = (
    -0.992968738079071, -0.9789062738418579, -0.96484375, -0.9507812261581421,
    -0.936718761920929, -0.922656238079071, -0.9085937738418579, -0.89453125,
    -0.8804687261581421, -0.866406261920929, -0.852343738079071, -0.8382812738418579,
    -0.82421875, -0.8101562261581421, -0.796093761920929, -0.782031238079071,
    -0.7679687738418579, -0.75390625, -0.7398437261581421, -0.725781261920929,
    -0.7117187976837158, -0.6976562738418579, -0.68359375, -0.6695312261581421,
    -0.655468761920929, -0.6414062976837158, -0.6273437738418579, -0.61328125,
    -0.5992187261581421, -0.585156261920929, -0.5710937976837158, -0.5570312738418579,
    -0.54296875, -0.5289062261581421, -0.5148437023162842, -0.500781238079071,
    -0.48671871423721313, -0.47265625, -0.4585937261581421, -0.44453126192092896,
    -0.43046873807907104, -0.4164062440395355, -0.40234375, -0.3882812261581421,
    -0.37421876192092896, -0.36015623807907104, -0.3460937440395355, -0.33203125,
    -0.3179687261581421, -0.30390626192092896, -0.28984373807907104, -0.2757812738418579,
    -0.26171875, -0.24765624105930328, -0.23359374701976776, -0.21953125298023224,
    -0.20546874403953552, -0.19140625, -0.17734375596046448, -0.16328124701976776,
    -0.14921875298023224, -0.13515624403953552, -0.12109375, -0.10703125596046448,
    -0.09859374910593033, -0.09578125923871994, -0.09296875447034836, -0.09015624970197678,
    -0.08734375238418579, -0.08453124761581421, -0.08171875774860382, -0.07890625298023224,
    -0.07609374821186066, -0.07328125089406967, -0.07046874612569809, -0.0676562562584877,
    -0.06484375149011612, -0.062031250447034836, -0.05921875312924385, -0.05640624836087227,
    -0.053593751043081284, -0.05078125, -0.047968748956918716, -0.04515625163912773,
    -0.04234374687075615, -0.039531249552965164, -0.03671875223517418, -0.033906251192092896,
    -0.031093750149011612, -0.028281250968575478, -0.025468749925494194, -0.02265625074505806,
    -0.019843751564621925, -0.017031250521540642, -0.014218750409781933, -0.011406250298023224,
    -0.009718749672174454, -0.009156249463558197, -0.008593750186264515, -0.008031249977648258,
    -0.0074687497690320015, -0.006906250026077032, -0.006343749817460775, -0.005781250074505806,
    -0.0052187503315508366, -0.0046562496572732925, -0.004093749914318323, -0.0035312497057020664,
    -0.002968749962747097, -0.002406249986961484, -0.001843750011175871, -0.001281249918974936,
    -0.0009437500848434865, -0.0008312499849125743, -0.0007187500596046448, -0.0006062500760890543,
    -0.000493750034365803, -0.0003812500217463821, -0.0002687500382307917, -0.00015625001105945557,
    -8.874999912222847e-05, -6.625000241911039e-05, -4.374999844003469e-05, -2.1249998098937795e-05,
    -7.749999895168003e-06, -3.250000190746505e-06, -5.500000384017767e-07, 0.0,
    5.500000384017767e-07, 3.250000190746505e-06, 7.749999895168003e-06, 2.1249998098937795e-05,
    4.374999844003469e-05, 6.625000241911039e-05, 8.874999912222847e-05, 0.00015625001105945557,
    0.0002687500382307917, 0.0003812500217463821, 0.000493750034365803, 0.0006062500760890543,
    0.0007187500596046448, 0.0008312499849125743, 0.0009437500848434865, 0.001281249918974936,
    0.001843750011175871, 0.002406249986961484, 0.002968749962747097, 0.0035312497057020664,
    0.004093749914318323, 0.0046562496572732925, 0.0052187503315508366, 0.005781250074505806,
    0.006343749817460775, 0.006906250026077032, 0.0074687497690320015, 0.008031249977648258,
    0.008593750186264515, 0.009156249463558197, 0.009718749672174454, 0.011406250298023224,
    0.014218750409781933, 0.017031250521540642, 0.019843751564621925, 0.02265625074505806,
    0.025468749925494194, 0.028281250968575478, 0.031093750149011612, 0.033906251192092896,
    0.03671875223517418, 0.039531249552965164, 0.04234374687075615, 0.04515625163912773,
    0.047968748956918716, 0.05078125, 0.053593751043081284, 0.05640624836087227,
    0.05921875312924385, 0.062031250447034836, 0.06484375149011612, 0.0676562562584877,
    0.07046874612569809, 0.07328125089406967, 0.07609374821186066, 0.07890625298023224,
    0.08171875774860382, 0.08453124761581421, 0.08734375238418579, 0.09015624970197678,
    0.09296875447034836, 0.09578125923871994, 0.09859374910593033, 0.10703125596046448,
    0.12109375, 0.13515624403953552, 0.14921875298023224, 0.16328124701976776,
    0.17734375596046448, 0.19140625, 0.20546874403953552, 0.21953125298023224,
    0.23359374701976776, 0.24765624105930328, 0.26171875, 0.2757812738418579,
    0.28984373807907104, 0.30390626192092896, 0.3179687261581421, 0.33203125,
    0.3460937440395355, 0.36015623807907104, 0.37421876192092896, 0.3882812261581421,
    0.40234375, 0.4164062440395355, 0.43046873807907104, 0.44453126192092896,
    0.4585937261581421, 0.47265625, 0.48671871423721313, 0.500781238079071,
    0.5148437023162842, 0.5289062261581421, 0.54296875, 0.5570312738418579,
    0.5710937976837158, 0.585156261920929, 0.5992187261581421, 0.61328125,
    0.6273437738418579, 0.6414062976837158, 0.655468761920929, 0.6695312261581421,
    0.68359375, 0.6976562738418579, 0.7117187976837158, 0.725781261920929,
    0.7398437261581421, 0.75390625, 0.7679687738418579, 0.782031238079071,
    0.796093761920929, 0.8101562261581421, 0.82421875, 0.8382812738418579,
    0.852343738079071, 0.866406261920929, 0.8804687261581421, 0.89453125,
    0.9085937738418579, 0.922656238079071, 0.936718761920929, 0.9507812261581421,
    0.96484375, 0.9789062738418579, 0.992968738079071, 1.0,
)


def bits_per_value(block: int = BLOCK, double: bool = True) -> float:
    """What one value costs stored: its 4-bit code and its share of the block's statistics."""
    stats = 8 / block + 32 / (block * STATS_BLOCK) if double else 32 / block
    return 4 + stats


@dataclass(frozen=True)
class Quantized:
    """One weight as NF4: `codes` uint8 (n / 2,), and its blocks' maxima as `absmax` float32
    (n / block,) or, double quantized, as `absmax_codes` uint8 (n / block,) with `scale`
    float32 (one per STATS_BLOCK maxima) and `offset` float32 ()."""
    codes: object
    absmax: object = None
    absmax_codes: object = None
    scale: object = None
    offset: object = None


def _nearest(code, scaled):
    """The index of the nearest value of the sorted `code` to each of `scaled` (in [-1, 1]):
    bitsandbytes' torch.bucketize over the midpoints (a value on a midpoint takes the lower)."""
    import jax.numpy as jnp

    code = jnp.asarray(code, jnp.float32)
    bounds = (code[:-1] + code[1:]) / 2
    return jnp.searchsorted(bounds, scaled, side="left").astype(jnp.uint8)


def _blockwise(values, block: int, code):
    """(codes uint8, maxima float32) of float32 `values` (n,) in blocks of `block`; a last,
    partial block has its own maximum (as if padded with zeros)."""
    import jax.numpy as jnp

    n = values.shape[0]
    padded = jnp.pad(values, (0, -n % block)).reshape(-1, block)
    absmax = jnp.max(jnp.abs(padded), axis=1)
    reciprocal = 1.0 / jnp.maximum(absmax, jnp.float32(1e-38))
    scaled = jnp.clip(padded * reciprocal[:, None], -1.0, 1.0).reshape(-1)[:n]
    return _nearest(code, scaled), absmax


def quantize(values, block: int = BLOCK, double: bool = True) -> Quantized:
    """NF4 codes of a weight's values, flattened in the order their blocks run (n divisible by
    `block`, even)."""
    import jax.numpy as jnp

    values = jnp.ravel(values).astype(jnp.float32)
    if values.shape[0] % block:
        raise ValueError(f"{values.shape[0]} values do not divide into blocks of {block}")
    codes, absmax = _blockwise(values, block, NF4_CODE)
    packed = (codes[0::2] << 4) | codes[1::2]
    if not double:
        return Quantized(codes=packed, absmax=absmax)
    offset = jnp.mean(absmax)
    absmax_codes, scale = _blockwise(absmax - offset, STATS_BLOCK, DYNAMIC_CODE)
    return Quantized(codes=packed, absmax_codes=absmax_codes, scale=scale, offset=offset)


def block_maxima(q: Quantized):
    """The blocks' absolute maxima, float32, as dequantization uses them, in the shape they are
    stored in (the scale of maximum i, counted in row-major order, is scale[i // 256])."""
    import jax
    import jax.numpy as jnp

    if q.absmax_codes is None:
        return q.absmax
    shape = q.absmax_codes.shape
    index = sum(jax.lax.broadcasted_iota(jnp.int32, shape, axis) * math.prod(shape[axis + 1:])
                for axis in range(len(shape)))
    centered = jnp.asarray(DYNAMIC_CODE, jnp.float32)[q.absmax_codes]
    return centered * q.scale[index // STATS_BLOCK] + q.offset


def dequantize(q: Quantized, dtype="bfloat16", block: int = BLOCK):
    """The weight's values in `dtype`, as bitsandbytes' dequantize_4bit gives them: (n,) from
    codes (n / 2,), or (rows, columns) from codes (rows, columns / 2) and maxima
    (rows, columns / block)."""
    import jax.numpy as jnp

    codes = jnp.stack([q.codes >> 4, q.codes & 0xF], axis=-1)
    codes = codes.reshape(*q.codes.shape[:-1], -1, block)  # (..., blocks, block)
    values = jnp.asarray(NF4_CODE, jnp.float32)[codes] * block_maxima(q)[..., None]
    return values.reshape(*q.codes.shape[:-1], -1).astype(dtype)

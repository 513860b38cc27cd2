"""runner/nf4.py against bitsandbytes 0.50.2 (the QLoRA source's quantizer): quantize_4bit with
quant_type="nf4", blocksize=64, compress_statistics=True, and dequantize_4bit.

What is equal and what is bounded:
- the 4-bit codes and their packing: equal, byte for byte;
- dequantization from the same stored state: equal, bit for bit, in bfloat16 and float32;
- the stored block maxima (double quantization): the runner takes the nearest of the 256 codes
  for each centered maximum, as bitsandbytes' CUDA kernel and its PyTorch fallback do;
  bitsandbytes' CPU kernel (a vectorised binary search, then a division where the others
  multiply by the reciprocal) now and then takes the neighbour one code away when the value
  lies within a rounding error of the midpoint. Where they differ the runner's code is the
  nearer one and they are neighbours (under 1% of the blocks here); their float32 mean (the
  offset) may differ in its last bits (XLA's summation order is not PyTorch's). The
  dequantized values then differ by at most one step of the 8-bit code times the block's
  scale, twice the offset's difference and two roundings; in the blocks whose stored
  maximum is the same, by the last two only.
"""

import bitsandbytes.functional as functional  # in the test extra, as torch
import numpy as np
import pytest
import torch

from runner import nf4

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def _weight(shape, dtype: str, seed: int = 0):
    values = np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 0.02
    return torch.tensor(values).to(DTYPES[dtype])


def _theirs(weight):
    packed, state = functional.quantize_4bit(weight, blocksize=64, quant_type="nf4",
                                             compress_statistics=True)
    return packed, state, functional.dequantize_4bit(packed, state, quant_type="nf4")


def _ours(weight, dtype: str):
    import jax.numpy as jnp

    return nf4.quantize(jnp.asarray(weight.float().numpy()).astype(dtype))


def test_the_codes_are_bitsandbytes_own():
    assert list(nf4.NF4_CODE) == functional.get_4bit_type("nf4", device="cpu").tolist()
    assert list(nf4.DYNAMIC_CODE) == functional.create_dynamic_map().tolist()
    assert nf4.bits_per_value() == pytest.approx(4.127, abs=5e-4)


# a 2-D weight (transformers' (out, in)); one whose maxima leave a partial block of 256
@pytest.mark.parametrize("shape", [(256, 512), (384, 1000)])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_nf4_with_double_quantization_is_bitsandbytes(shape, dtype):
    import jax.numpy as jnp

    weight = _weight(shape, dtype)
    packed, state, dequantized = _theirs(weight)
    ours = _ours(weight, dtype)
    # the 4-bit codes, two to a byte, the first in the high nibble
    np.testing.assert_array_equal(np.asarray(ours.codes), packed.numpy().reshape(-1))
    # dequantizing bitsandbytes' own stored state gives its values, bit for bit
    theirs_stored = nf4.Quantized(
        codes=jnp.asarray(packed.numpy().reshape(-1)),
        absmax_codes=jnp.asarray(state.absmax.numpy()),
        scale=jnp.asarray(state.state2.absmax.numpy()), offset=jnp.float32(state.offset.item()))
    np.testing.assert_array_equal(
        np.asarray(nf4.dequantize(theirs_stored, dtype).astype(jnp.float32)),
        dequantized.float().numpy().reshape(-1))
    # the stored maxima: the offset (a float32 mean: the order of its sum differs) within a
    # few of its last bits, the scales equal, the 8-bit codes equal but for a few neighbours
    # where ours is the nearer
    offset = np.float32(state.offset.item())
    moved = abs(np.float32(ours.offset) - offset)
    assert moved <= 4 * np.spacing(offset)
    np.testing.assert_allclose(np.asarray(ours.scale), state.state2.absmax.numpy(), rtol=1e-6)
    mine, theirs = np.asarray(ours.absmax_codes).astype(int), state.absmax.numpy().astype(int)
    differ = np.nonzero(mine != theirs)[0]
    assert len(differ) <= 0.01 * len(mine)
    assert np.all(np.abs(mine[differ] - theirs[differ]) == 1)
    scale = state.state2.absmax.numpy()
    target = (_unquantized_maxima(weight)[differ] - offset) / scale[differ // nf4.STATS_BLOCK]
    code = np.asarray(nf4.DYNAMIC_CODE)
    assert np.all(np.abs(code[mine[differ]] - target) <= np.abs(code[theirs[differ]] - target))
    # so the dequantized values: where the block's stored maximum is the same, within twice
    # the offset's difference (it moves the offset and, through the centered maxima, the
    # scale; x the largest NF4 value, 1) and two roundings (the maximum's, the value's in
    # the dtype); elsewhere also within one step of the 8-bit code x the block's scale
    ours_values = np.asarray(nf4.dequantize(ours, dtype).astype(jnp.float32)).reshape(-1, 64)
    their_values = dequantized.float().numpy().reshape(-1, 64)
    cast = _last_bit(their_values, dtype)
    same = np.ones(len(mine), bool)
    same[differ] = False
    gap = np.abs(ours_values - their_values)
    assert np.all(gap[same] <= 2 * moved + 2 * cast[same])
    step = np.abs(np.diff(code)).max() * scale.max()
    assert np.all(gap <= step + 2 * moved + 2 * cast)


def _last_bit(values: np.ndarray, dtype: str) -> np.ndarray:
    """The value of the last mantissa bit of each value in `dtype` (bfloat16: 7 bits)."""
    mantissa = 7 if dtype == "bfloat16" else 23
    exponent = np.floor(np.log2(np.maximum(np.abs(values), np.finfo(np.float32).tiny)))
    return (2.0 ** (exponent - mantissa)).astype(np.float32)


def _unquantized_maxima(weight) -> np.ndarray:
    return np.abs(weight.float().numpy().reshape(-1, 64)).max(axis=1)


def test_a_size_that_does_not_divide_into_blocks_is_refused():
    import jax.numpy as jnp

    with pytest.raises(ValueError, match="do not divide into blocks of 64"):
        nf4.quantize(jnp.ones((3, 40)))


def test_every_nf4_layer_stores_its_transformers_weight_as_bitsandbytes_does():
    """quant=nf4 on the tiny Gemma in bfloat16 (as transformers loads the QLoRA base): each
    linear layer's stored codes are bitsandbytes' codes of the transformers weight that layer
    exports to (the converter's own map), byte for byte: the blocks run along the same inputs
    of the same outputs; its dequantized kernel, read back through the same map, is
    bitsandbytes' dequantized weight within the double quantization's bound."""
    import jax.numpy as jnp

    from conftest import compose
    from runner import model, nf4_layers
    from runner.export.hf_config import hf_config
    from runner.hf.ports import converter_ports
    from runner.presets import describe

    cfg = compose("quant=nf4", "lora.rank=4", "train.precision=bfloat16")
    described = describe(cfg.model)
    plain = model.build_causal_lm(cfg.model, None, None, "bfloat16", described=described)
    quantized = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, "bfloat16",
                                      described=described)
    ports = {p.path: p for p in converter_ports(
        described.family, described.numbers, hf_config(described.family, plain.backbone))}
    kernels = {v.path: v for v in plain.backbone.variables}
    assert nf4_layers.quantizable_layers(quantized.backbone) == []  # none left in float
    checked = 0
    for layer in [lay for lay in quantized.backbone._flatten_layers() if hasattr(lay, "four_bit")]:
        port = ports[f"{layer.path}/kernel"]
        weight = port.to_hf(np.asarray(kernels[port.path].value.astype(jnp.float32)))
        packed, state, dequantized = _theirs(torch.tensor(weight).to(torch.bfloat16))
        np.testing.assert_array_equal(np.asarray(layer.nf4_codes.value).reshape(-1),
                                      packed.numpy().reshape(-1))
        ours = port.to_hf(np.asarray(nf4_layers.dequantized_kernel(layer).astype(jnp.float32)))
        bound = (np.abs(np.diff(nf4.DYNAMIC_CODE)).max() * state.state2.absmax.numpy().max()
                 + 2 * _last_bit(np.abs(weight), "bfloat16"))
        assert np.all(np.abs(ours - dequantized.float().numpy()) <= bound)
        checked += 1
    assert checked == 4 * 7  # query, key, value, output, two gates and the down projection


def test_the_plan_stores_nf4_split_like_its_kernels_and_names_what_cannot_be():
    """On the 2 x 4 mesh: the codes split as their float kernels (heads over the model axis),
    about 4.13 bits per parameter; a block size the inputs do not divide into, and NF4 without
    LoRA, are one line each."""
    from conftest import compose
    from runner import checks
    from runner.plan.assemble import make_plan

    the_plan, _ = make_plan(compose("quant=nf4"), 8)
    assert the_plan.problems == []
    entries = {e.path: e for e in the_plan.entries}
    assert "decoder_block_0/attention/query/kernel" not in entries
    codes = entries["decoder_block_0/attention/query/nf4_codes"]  # (heads x head_dim, hidden/2)
    assert codes.shape == (128, 64) and codes.spec == ("model", "batch")
    assert entries["decoder_block_0/ffw_linear/nf4_codes"].spec == ("batch", "model")
    assert entries["decoder_block_0/attention/query/nf4_scale"].spec == (None,)
    assert any("4.128 bits" in note for note in the_plan.notes)  # 4.127 + the last scale's
    rules = {r.pattern: r.axes for r in the_plan.placement_rules()}  # the float kernel loads
    assert rules["decoder_block_0/attention/query/kernel"] == ("model", "batch", None)

    blocks, _ = make_plan(compose("quant=nf4", "quant.block_size=256"), 8)
    assert any("128 inputs per output, which do not divide into quant.block_size=256" in p
               for p in blocks.problems), blocks.problems
    no_lora = checks.run_checks(compose("quant=nf4", "lora=none"), 8).problems
    assert any("quant=nf4 with lora.rank=0" in p for p in no_lora), no_lora

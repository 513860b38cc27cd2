"""quant=nf4 loads one linear layer at a time (runner/nf4_loading.py).

Two things must hold. Every value (NF4 codes and statistics, embedding, norms, LoRA, biases)
and every variable's placement equals what quantizing after a full-precision load gives, for
each source of weights: a keras-hub preset, a Hugging Face folder (Qwen 2: biases on
query/key/value), random weights. And while the model loads, the memory held is the NF4 base
and one float kernel, never the float base: measured as the bytes of every live JAX array on
every device, each time a layer is quantized, by the same instrument on both ways of loading.
"""

import random

import numpy as np
import pytest

from conftest import compose


def _plan(cfg, devices):
    from runner.plan.assemble import make_plan

    the_plan, _ = make_plan(cfg, len(devices))
    assert the_plan.problems == []
    return the_plan


def _build(cfg, devices, the_plan, after_full_load: bool):
    """The model built as a run builds it (seeded as the run seeds, inside the plan's
    distribution); after_full_load: the float model loaded whole, then quantized."""
    import keras

    from runner import layout, model, nf4_layers

    keras.backend.clear_session()
    preprocessor = model.load_preprocessor(cfg.model)  # before the seeds, as a run builds it
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    with layout.distribution(cfg.mesh, the_plan.placement_rules(), devices).scope():
        if after_full_load:
            lm = model.build_causal_lm(cfg.model, cfg.lora, None, cfg.train.precision,
                                       preprocessor)
            nf4_layers.quantize(lm.backbone, cfg.quant)
        else:
            lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision,
                                       preprocessor)
    return lm


def _values(lm) -> dict:
    from runner.plan.placement import actual_specs

    specs = actual_specs(lm.backbone.variables)  # padded to the rank, as the run checks them
    return {v.path: (np.asarray(v.value), specs[v.path]) for v in lm.backbone.variables}


def _held_bytes() -> int:
    """The bytes of every live array's buffer on every device, each buffer once (a sharded
    array's per-device pieces are live arrays too once read)."""
    import jax

    buffers = {}
    for array in jax.live_arrays():
        for shard in array.addressable_shards:
            buffers[(shard.device.id, shard.data.unsafe_buffer_pointer())] = shard.data.nbytes
    return sum(buffers.values())


@pytest.mark.parametrize("source,quant", [("keras-hub preset", "nf4"),
                                          ("hugging face folder", "nf4"), ("random", "nf4"),
                                          ("keras-hub preset", "int4")])
def test_loading_layer_by_layer_gives_the_values_of_quantizing_after_a_full_load(
        source, quant, tmp_path):
    import keras

    import hf_checkpoints

    extra = {"keras-hub preset": [],
             "hugging face folder": [f"model.preset={hf_checkpoints.make('qwen2', tmp_path)}"],
             "random": ["model.weights=random"]}[source]
    cfg = compose(f"quant={quant}", "lora=rank4", "lora.dropout=0.05",
                  "train.precision=bfloat16", *extra)
    devices = keras.distribution.list_devices()
    the_plan = _plan(cfg, devices)
    streamed = _values(_build(cfg, devices, the_plan, after_full_load=False))
    whole = _values(_build(cfg, devices, the_plan, after_full_load=True))
    assert sorted(streamed) == sorted(whole)
    assert any(path.endswith(f"/{quant}_codes") for path in streamed)
    assert any(path.endswith("/lora_kernel_a") for path in streamed)
    if source == "hugging face folder":
        assert any(path.endswith("/bias") for path in streamed)
    for path, (value, spec) in whole.items():
        np.testing.assert_array_equal(streamed[path][0], value, err_msg=path)
        assert streamed[path][1] == spec, path
    assert any(any(spec) for _, spec in whole.values())  # the 2 x 4 mesh splits some


def test_loading_holds_the_nf4_base_and_one_float_kernel_never_the_float_base(monkeypatch):
    import jax
    import keras

    from runner import nf4_layers

    held = []

    def measuring(function):  # the bytes held on every device as each layer is quantized
        def measured(*args, **kwargs):
            held.append(_held_bytes())
            return function(*args, **kwargs)
        return measured

    # both ways quantize each layer by nf4_layers.store (its float kernel in hand)
    monkeypatch.setattr(nf4_layers, "store", measuring(nf4_layers.store))
    cfg = compose("quant=nf4", "lora=rank4")
    devices = keras.distribution.list_devices()
    the_plan = _plan(cfg, devices)
    keras.backend.clear_session()
    jax.clear_caches()
    before = _held_bytes()
    lm = _build(cfg, devices, the_plan, after_full_load=False)
    layers = [layer for layer in lm.backbone._flatten_layers() if hasattr(layer, "four_bit")]
    assert len(held) >= len(layers)  # measured at every layer
    streamed = max(held) - before
    float_kernels = [np.prod(layer.four_bit.kernel_shape) * 4 * len(devices) for layer in layers]
    model_bytes = sum(shard.data.nbytes for v in lm.backbone.variables
                      for shard in v.value.addressable_shards)
    # bound: the whole loaded model (its NF4 base) and the largest float kernel whole on every
    # device, twice over (the value read, its placement); loading in full precision first
    # holds the whole float base, far more
    bound = model_bytes + 2 * max(float_kernels)
    print(f"held while loading: {streamed:,} bytes; bound {bound:,}; float kernels "
          f"{sum(float_kernels):,}")
    assert streamed <= bound, (streamed, bound)
    held.clear()
    del lm
    _build(cfg, devices, the_plan, after_full_load=True)  # the same instrument, the old way
    print(f"held loading in full precision first: {max(held) - before:,} bytes")
    assert max(held) - before > max(bound, sum(float_kernels) / len(devices))

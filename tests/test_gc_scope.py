"""Quantizing makes one garbage collection, not one per layer (runner/gc_scope.py), and the
float kernels it drops are freed at once all the same (their reference count, no cycle)."""

import gc
import weakref

import pytest

from conftest import compose


@pytest.mark.parametrize("quant", ["int8", "nf4"])
def test_planning_a_quantized_model_collects_garbage_once_not_per_layer(quant, monkeypatch):
    from runner.plan.assemble import make_plan

    calls = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or collect(*a))
    the_plan, _ = make_plan(compose(f"quant={quant}", "lora=rank4"), 8)
    assert the_plan.problems == []
    # tiny Gemma has 28 linear layers: Keras's own deletion collects once for each
    assert 1 <= len(calls) <= 2, len(calls)


def test_the_kernels_int8_drops_are_freed_before_the_one_collection():
    import keras
    import keras_hub

    from runner.gc_scope import one_collection
    from runner.presets import SHIPPED_PRESETS

    backbone = keras_hub.models.Backbone.from_preset(str(SHIPPED_PRESETS / "tiny_gemma"))
    kernels = [weakref.ref(layer._kernel) for layer in backbone._flatten_layers()
               if isinstance(layer, (keras.layers.Dense, keras.layers.EinsumDense))]
    with one_collection():
        backbone.quantize("int8")
        alive = [ref for ref in kernels if ref() is not None]
    assert len(kernels) == 28 and alive == []
    assert gc.collect.__module__ == "gc"  # the scope gives gc.collect back

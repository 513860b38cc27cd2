"""quant=int4: Keras's int4 quantizer, stored by the runner so it splits over the model axis.

Held to Keras 3.15 (float32 weights): the codes and zero points are those of
keras.quantizers.abs_max_quantize_grouped_with_zero_point (what Dense.quantize("int4") applies
with its default block of 128), exactly; the scales are within one float32 step of Keras's
(its numpy divides correctly rounded, XLA:CPU's division can be one step off: measured on
plain x / 15); dequantizing Keras's own stored state gives, bit for bit, the kernel Keras's
int4 Dense multiplies by (read through an identity input). Then a run:
the tiny model trains with an int4 base on the 2 x 4 mesh (model axis 4) with LoRA dropout,
its codes split over the model axis as the plan says, which the run checks itself.
"""

import json

import numpy as np
import pytest

from conftest import compose, run_cli


def _weight(rows: int, columns: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(rows, columns)).astype(np.float32) * 0.02
    weight[0, :128] = np.abs(weight[0, :128])  # a group with no negative value: zero point -8
    weight[1, :128] = 0.25  # a constant group: the scale is Keras's epsilon / 15
    return weight


def test_int4_codes_scales_and_zero_points_are_keras_own():
    import jax.numpy as jnp
    from keras import quantizers

    from runner import int4

    weight = _weight(96, 512)  # transformers' (out, in); Keras's quantizer takes (in, out)
    codes, scale, zero = quantizers.abs_max_quantize_grouped_with_zero_point(
        weight.T, block_size=128, to_numpy=True)
    ours = int4.quantize(jnp.asarray(weight), 128)
    np.testing.assert_array_equal(np.asarray(int4.codes_of(ours)), np.asarray(codes).T)
    theirs = np.asarray(scale).T
    assert np.all(np.abs(np.asarray(ours.scale) - theirs) <= np.spacing(theirs))
    np.testing.assert_array_equal(np.asarray(ours.zero), np.asarray(zero).T)
    assert ours.codes.shape == (96, 256) and ours.codes.dtype == jnp.uint8
    assert int4.bits_per_value(128) == pytest.approx(4.3125)


def test_the_dequantized_kernel_is_the_one_keras_int4_dense_multiplies_by():
    import jax.numpy as jnp
    import keras
    from keras import quantizers

    from runner import int4

    weight = _weight(96, 512, seed=1)
    dense = keras.layers.Dense(96, use_bias=False, dtype="float32")
    dense.build((None, 512))
    dense.kernel.assign(weight.T)
    dense.quantize("int4")  # Keras's default: Int4QuantizationConfig(block_size=128)
    keras_kernel = np.asarray(dense(np.eye(512, dtype=np.float32)))  # (in, out)
    codes, scale, zero = quantizers.abs_max_quantize_grouped_with_zero_point(
        weight.T, block_size=128, to_numpy=True)  # what the layer stored, unpacked
    nibbles = (np.asarray(codes).T + 8).astype(np.uint8)
    stored = int4.Quantized(codes=jnp.asarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]),
                            scale=jnp.asarray(scale).T, zero=jnp.asarray(zero).T)
    ours = np.asarray(int4.dequantize(stored, "float32", 128)).T
    np.testing.assert_array_equal(ours, keras_kernel)
    quantized_here = np.asarray(int4.dequantize(int4.quantize(jnp.asarray(weight), 128),
                                                "float32", 128)).T
    np.testing.assert_allclose(quantized_here, keras_kernel, rtol=3e-7, atol=0)
    # and it is the weight, to 4 bits; but for the constant group, which Keras's quantizer reads
    # back as about 0 (its zero point, -0.25 / scale, is clipped to 7), as the runner's does
    assert np.abs(keras_kernel - weight.T)[:, [0] + list(range(2, 96))].max() < 0.02
    assert np.abs(keras_kernel[:128, 1]).max() < 1e-6
    assert np.abs(quantized_here[:128, 1]).max() < 1e-6


def test_the_plan_splits_int4_over_the_model_axis():
    from runner.plan.assemble import make_plan

    the_plan, _ = make_plan(compose("quant=int4"), 8)
    assert the_plan.problems == []
    entries = {e.path: e for e in the_plan.entries}
    codes = entries["decoder_block_0/attention/query/int4_codes"]  # (heads x head_dim, hidden/2)
    assert codes.shape == (128, 64) and codes.spec == ("model", "batch")
    assert entries["decoder_block_0/attention/query/int4_scale"].shape == (128, 1)
    assert entries["decoder_block_0/ffw_linear/int4_codes"].spec == ("batch", "model")
    assert not any(path.endswith("/kernel") and "decoder_block" in path for path in entries)
    assert any("4.312 bits" in note for note in the_plan.notes), the_plan.notes


@pytest.mark.slow
def test_an_int4_base_trains_split_over_the_model_axis_with_lora_dropout(workdir):
    proc = run_cli("quant=int4", "lora.dropout=0.05", "mesh=2x4", "train.steps=4",
                   "train.log_every=2", "optimizer.learning_rate=0.01", "generate.prompts=[]",
                   "tracking.mode=disabled", "hydra.run.dir=run", cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split("\t") for line in (workdir / "run" / "sharding.tsv").read_text()
             .splitlines()]
    rows = {line[0]: dict(zip(lines[0], line)) for line in lines[1:]}
    codes = rows["decoder_block_0/attention/query/int4_codes"]
    assert "model" in codes["spec"] and codes["dtype"] == "uint8", codes
    assert "decoder_block_0/attention/query/lora_dropout/seed_generator_state" in rows
    losses = [json.loads(line)["loss"] for line in (workdir / "run" / "metrics.jsonl")
              .read_text().splitlines() if '"loss"' in line]
    assert len(losses) >= 2 and all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_a_family_with_matrices_outside_linear_layers_is_refused_before_weights(tmp_path):
    """Mixtral's expert bank is one variable per layer, not Dense layers: a 4-bit base (or
    Keras's int8, which skips it) would leave it (most of the model) in full precision, so the
    plan refuses, naming it."""
    import hf_checkpoints
    from runner.plan.assemble import make_plan

    folder = hf_checkpoints.make("mixtral", tmp_path / "mixtral")
    for mode in ("nf4", "int4", "int8"):
        the_plan, _ = make_plan(compose(f"model.preset={folder}", f"quant={mode}"), 8)
        lines = [p for p in the_plan.problems if "outside any Dense" in p]
        assert len(lines) == 1 and f"quant={mode}:" in lines[0], the_plan.problems
        assert "expert_feedforward" in lines[0] and "use quant=none" in lines[0]
    plain, _ = make_plan(compose(f"model.preset={folder}"), 8)
    assert not any("outside any Dense" in p for p in plain.problems)

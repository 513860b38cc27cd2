"""The runner's train step (runner/step.py, runner/token_loss.py) against Keras's own, for every
family: the same loss, token counts, accuracy and updated weights, whether the loss is tiled
over the sequence or not and whether the batch is one or several micro-batches.

Keras's step (the CausalLM's logits, then SparseCategoricalCrossentropy with reduction
mean_with_sample_weight) is the reference: what the runner computed before it had its own step.
SGD with learning rate 1 makes the updated weights the gradients themselves."""

import numpy as np
import pytest

import hf_checkpoints
from conftest import compose
from tiny_models import tiny_causal_lm

MODEL_TYPES = sorted(hf_checkpoints.KINDS)


def _batch(batch=4, length=16):
    """Token ids with loss weights as assistant-only masks give them: uneven per row, so the
    micro-batches hold different numbers of loss tokens."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, hf_checkpoints.VOCAB, (batch, length)).astype("int32")
    weights = np.zeros((batch, length), "float32")
    for row, (start, end) in enumerate([(0, 16), (10, 13), (2, 15), (14, 16)][:batch]):
        weights[row, start:end] = 1.0
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    return x, np.roll(ids, -1, axis=1), weights


def _one_step(lm, tiles=None, micro=1):
    """Logs and updated trainable weights of one SGD(1.0) step from the current weights:
    Keras's own step when tiles is None, else the runner's."""
    import keras

    from runner import step
    from runner.metrics import TokenMetrics

    metrics = TokenMetrics()
    lm.compile(optimizer=keras.optimizers.SGD(1.0), weighted_metrics=[metrics],
               loss=keras.losses.SparseCategoricalCrossentropy(
                   from_logits=True, reduction="mean_with_sample_weight"))
    if tiles is not None:
        step.install(lm, metrics, tiles, micro)
    x, y, w = _batch()
    logs = lm.train_on_batch(x, y, w, return_dict=True)
    return logs, [np.asarray(v.numpy()) for v in lm.trainable_variables]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_runner_step_equals_keras_step_in_every_family(model_type):
    lm = tiny_causal_lm(model_type, "rank4")
    start = [np.asarray(v.numpy()) for v in lm.trainable_variables]
    reference, expected = _one_step(lm)
    # Mixtral adds its router's load-balancing loss, a mean over the tokens of a micro-batch
    # and not linear in them: with micro-batches only its cross-entropy part is exact (the
    # update then follows each micro-batch's balance, as in every accumulating trainer)
    own_loss = not np.isclose(reference["loss"], reference["token_loss"], rtol=1e-6)
    assert own_loss == (model_type == "mixtral")
    for tiles, micro in ((1, 1), (4, 2)):  # untiled in one batch; tiled in micro-batches
        for v, value in zip(lm.trainable_variables, start):
            v.assign(value)
        logs, got = _one_step(lm, tiles, micro)
        exact = micro == 1 or not own_loss
        for key in ("loss", "token_loss", "tokens", "correct", "step_loss_sum"):
            if key != "loss" or exact:
                assert np.isclose(logs[key], reference[key], rtol=1e-5, atol=1e-6), \
                    (tiles, micro, key, logs[key], reference[key])
        for v, a, b, s in zip(lm.trainable_variables, got, expected, start):
            assert not exact or np.allclose(a - s, b - s, rtol=1e-5, atol=1e-6), \
                (tiles, micro, v.path)


@pytest.mark.parametrize("model_type", ["gemma", "llama"])
def test_full_fine_tuning_trains_the_output_layer_the_same(model_type):
    """Without LoRA the output layer trains: Gemma's is the tied embedding (its gradient comes
    from the input and the output side), Llama's its own reverse embedding."""
    lm = tiny_causal_lm(model_type, "none")
    start = [np.asarray(v.numpy()) for v in lm.trainable_variables]
    _, expected = _one_step(lm)
    for v, value in zip(lm.trainable_variables, start):
        v.assign(value)
    _, got = _one_step(lm, tiles=4, micro=2)
    embeddings = [i for i, v in enumerate(lm.trainable_variables) if "embedding" in v.path]
    assert embeddings
    for i in embeddings:
        assert not np.allclose(expected[i], start[i])  # it did train
    for v, a, b, s in zip(lm.trainable_variables, got, expected, start):
        assert np.allclose(a - s, b - s, rtol=1e-5, atol=1e-6), v.path


def test_evaluation_reports_the_same_loss_as_keras():
    import keras

    from runner import step
    from runner.metrics import TokenMetrics, flat

    lm = tiny_causal_lm("qwen3", "rank4")
    x, y, w = _batch()
    results = []
    for tiles in (None, 2):
        metrics = TokenMetrics()
        lm.compile(optimizer=keras.optimizers.SGD(1.0), weighted_metrics=[metrics],
                   loss=keras.losses.SparseCategoricalCrossentropy(
                       from_logits=True, reduction="mean_with_sample_weight"))
        if tiles:
            step.install(lm, metrics, tiles)
        results.append(flat(lm.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)))
    for key in ("loss", "mean_token_loss", "mean_accuracy"):
        assert np.isclose(results[0][key], results[1][key], rtol=1e-6), key


def test_the_batch_and_sequence_must_split_exactly():
    from runner import checks

    for overrides, words in (
            (["train.gradient_accumulation_steps=3"], "does not divide train.batch_size=8"),
            (["train.loss_tiles=5"], "does not divide train.sequence_length=64"),
            (["train.gradient_accumulation_steps=8", "mesh=data_parallel"],
             "micro-batches of 1 does not divide by the mesh's batch axis")):
        cfg = compose(*overrides)
        found = checks.run_checks(cfg, 8, for_training=False).problems
        if not any(words in p for p in found):
            from runner.plan.assemble import make_plan
            found = make_plan(cfg, 8)[0].problems
        assert any(words in p for p in found), (overrides, found)


def _kernel_sized_products(lm, shapes) -> int:
    """dot_generals in the train step's program whose result has an adapted kernel's shape:
    A @ B merged into a kernel, or a kernel's full-size gradient."""
    import jax
    import keras

    from runner import step
    from runner.metrics import TokenMetrics

    metrics = TokenMetrics()
    lm.compile(optimizer=keras.optimizers.SGD(1.0), weighted_metrics=[metrics],
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    step.install(lm, metrics, 1)
    lm._symbolic_build(data_batch=_batch())
    state = ([v.value for v in lm.trainable_variables],
             [v.value for v in lm.non_trainable_variables],
             [v.value for v in lm.optimizer.variables],
             [v.value for v in lm.metrics_variables])
    program = jax.make_jaxpr(lm.train_step)(state, _batch())

    def count(jaxpr):
        found = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general" and \
                    tuple(eqn.outvars[0].aval.shape) in shapes:
                found += 1
            for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
                found += count(sub)
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    found += count(inner)
        return found
    return count(program.jaxpr)


def test_lora_is_computed_factored_so_no_kernel_sized_product_exists():
    """x @ W + s (x @ A) @ B (PEFT's form) rather than Keras's x @ (W + s A @ B): the step has
    no merged kernel and no full-size kernel gradient; the outputs are the same."""
    import keras

    lm = tiny_causal_lm("gemma", "rank4")
    adapted = [layer for layer in lm.backbone._flatten_layers() if getattr(
        layer, "lora_enabled", False)]
    shapes = {tuple(layer._kernel.shape) for layer in adapted}
    x, _, _ = _batch()
    factored = np.asarray(lm.predict_on_batch(x))
    assert _kernel_sized_products(lm, shapes) == 0
    for layer in adapted:  # back to Keras's own class: the merged kernel
        layer.__class__ = keras.layers.EinsumDense
    merged = np.asarray(lm.predict_on_batch(x))
    assert np.allclose(factored, merged, rtol=1e-5, atol=1e-5)
    assert _kernel_sized_products(lm, shapes) > 0


def _vocabulary_reductions(lm, install: bool) -> int:
    """reduce operations over the vocabulary axis in the train step as lowered (before XLA
    fuses anything): what the step asks the devices to do over batch x length x vocabulary."""
    import re

    import jax
    import keras

    from runner import step
    from runner.metrics import TokenMetrics

    metrics = TokenMetrics()
    lm.compile(optimizer=keras.optimizers.SGD(1.0), weighted_metrics=[metrics],
               loss=keras.losses.SparseCategoricalCrossentropy(
                   from_logits=True, reduction="mean_with_sample_weight"))
    if install:
        step.install(lm, metrics, 4)
    x, y, w = _batch()
    lm._symbolic_build(data_batch=(x, y, w))
    state = tuple([v.value for v in vs] for vs in (
        lm.trainable_variables, lm.non_trainable_variables, lm.optimizer.variables,
        lm.metrics_variables))
    text = jax.jit(lm.train_step).lower(state, (x, y, w)).as_text()
    vocabulary = hf_checkpoints.VOCAB
    found = 0
    for line in text.splitlines():
        match = re.search(r"stablehlo\.reduce\(.*?\) .*?dimensions = \[([\d, ]+)\].*?: "
                          r"\(tensor<([\dx]+)x\w+>", line)
        if match:
            shape = [int(d) for d in match.group(2).split("x")]
            found += any(shape[int(a)] == vocabulary for a in match.group(1).split(","))
    return found


def test_the_step_reduces_over_the_vocabulary_in_one_pass():
    """Keras's step takes the loss's log-softmax, the metric's own and an argmax (and reduces
    again in their backward passes); the runner's takes one max and one sum of exponentials
    per tile, and none in the backward pass (the gradient is taken in the forward pass)."""
    lm = tiny_causal_lm("qwen3", "rank4")
    keras_count = _vocabulary_reductions(lm, install=False)
    runner_count = _vocabulary_reductions(lm, install=True)
    assert runner_count == 2, runner_count
    assert keras_count >= 5, keras_count

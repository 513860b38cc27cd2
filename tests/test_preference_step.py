"""The preference step's pieces: per-row log-probabilities from the tiled output layer
(runner.token_loss.row_logps) against plain autodiff, and the batch of pairs split into
micro-batches with each pair whole."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from runner.step import _micro_batches
from runner.token_loss import row_logps

ROWS, LENGTH, HIDDEN, VOCAB = 4, 8, 6, 11


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(ROWS, LENGTH, HIDDEN)), jnp.float32)
    embedding = jnp.asarray(rng.normal(size=(VOCAB, HIDDEN)), jnp.float32)
    scale = jnp.asarray(rng.normal(size=(VOCAB,)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, VOCAB, size=(ROWS, LENGTH)), jnp.int32)
    answer = (rng.random((ROWS, LENGTH)) < 0.5).astype(np.float32)
    every = np.ones((ROWS, LENGTH), np.float32)
    every[:, -2:] = 0  # padding
    weights = jnp.asarray(np.stack([answer * every, every], axis=-1))
    return hidden, [embedding, scale], labels, weights


def _head(values, h):
    embedding, scale = values
    return jnp.tanh(h @ embedding.T) * 3.0 + scale  # a soft-capped, biased output layer


def _plain(values, hidden, labels, weights):
    logp = jax.nn.log_softmax(_head(values, hidden), axis=-1)
    picked = jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return jnp.einsum("bl,blk->bk", picked, weights)


@pytest.mark.parametrize("tiles", [1, 2, 4])
@pytest.mark.parametrize("trainable", [(False, False), (True, False), (True, True)],
                         ids=["frozen", "embedding", "both"])
def test_row_logps_and_their_gradients_are_plain_autodiffs(tiles, trainable):
    hidden, values, labels, weights = _inputs()
    # a loss that is not linear in the sums: every row's gradient weight differs
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=(ROWS, 2)), jnp.float32)

    def ours(values, hidden):
        logps, _ = row_logps(_head, values, trainable, hidden, labels, weights, tiles)
        return jnp.sum(jnp.sin(logps) * cotangent), logps

    def theirs(values, hidden):
        logps = _plain(values, hidden, labels, weights)
        return jnp.sum(jnp.sin(logps) * cotangent), logps

    (_, got), (d_values, d_hidden) = jax.value_and_grad(ours, argnums=(0, 1), has_aux=True)(
        values, hidden)
    (_, want), (w_values, w_hidden) = jax.value_and_grad(theirs, argnums=(0, 1),
                                                         has_aux=True)(values, hidden)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_hidden, w_hidden, rtol=1e-4, atol=1e-5)
    for learns, d, w in zip(trainable, d_values, w_values):
        if learns:
            np.testing.assert_allclose(d, w, rtol=1e-4, atol=1e-5)


def test_row_hits_count_the_labels_at_the_top():
    hidden, values, labels, weights = _inputs()
    _, hits = row_logps(_head, values, (False, False), hidden, labels, weights, 2)
    top = jnp.argmax(_head(values, hidden), axis=-1) == labels
    np.testing.assert_allclose(hits, jnp.einsum("bl,blk->bk", top.astype(jnp.float32), weights))


def test_micro_batches_keep_each_pair_whole():
    rows = jnp.arange(16)  # 8 pairs: (0, 1), (2, 3), ...
    batches = np.asarray(_micro_batches(rows, 4, pairs=True))
    assert batches.shape == (4, 4)
    for micro in batches:
        assert all(micro[i] % 2 == 0 and micro[i + 1] == micro[i] + 1
                   for i in range(0, len(micro), 2))
    assert sorted(batches.ravel().tolist()) == list(range(16))


def test_a_full_fine_tunes_compiled_step_carries_one_frozen_copy_as_planned():
    """objective=dpo lora=none: the compiled step's arguments are a full fine-tune's (as
    SimPO's, which has no reference and the same metrics) plus the planned reference copy's
    bytes per device, exactly."""
    from conftest import compose
    from runner.plan.assemble import make_plan
    from runner.plan.compiled import compile_train_step

    found = {}
    for name in ("simpo", "dpo"):
        cfg = compose("experiment=dpo_tiny", "lora=none", f"objective={name}",
                      "train.batch_size=8", "train.sequence_length=64")
        the_plan, _ = make_plan(cfg, 8)
        found[name] = the_plan, compile_train_step(cfg, the_plan, 8)
    plan, dpo = found["dpo"]
    copy = [e for e in plan.entries if e.kind == "reference"]
    assert len(copy) == len(plan.weights) and plan.weights[0].trainable
    assert plan.total_params == found["simpo"][0].total_params
    assert dpo.arguments - found["simpo"][1].arguments == sum(e.bytes_per_device for e in copy)

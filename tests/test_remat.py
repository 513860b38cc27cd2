"""train.remat=blocks in every family: each block one jax.checkpoint, in a training call (Llama,
Mistral and Qwen decoders branch on `training` in Python, which Keras's own RematScope traced),
with the gradients of the same model without remat."""

import numpy as np
import pytest

import hf_checkpoints
from tiny_models import tiny_causal_lm

MODEL_TYPES = sorted(hf_checkpoints.KINDS)


def _gradients(lm, batch):
    """The jaxpr and the gradients of a training-mode forward pass's squared logits."""
    import jax
    import jax.numpy as jnp

    trainable = [v.value for v in lm.trainable_variables]
    frozen = [v.value for v in lm.non_trainable_variables]

    def loss(values):
        logits, _ = lm.stateless_call(values, frozen, batch, training=True)
        return jnp.mean(jnp.square(logits))
    return str(jax.make_jaxpr(jax.grad(loss))(trainable)), jax.grad(loss)(trainable)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_remat_blocks_checkpoints_every_block_and_keeps_the_gradients(model_type):
    from runner.families import FAMILIES, by_model_type
    from runner.remat import block_scope

    stem = FAMILIES[by_model_type(model_type)].block_stem
    plain = tiny_causal_lm(model_type, lora="rank4")
    with block_scope([f"{stem}{i}" for i in range(2)]):
        remat = tiny_causal_lm(model_type, lora="rank4")
    for a, b in zip(plain.weights, remat.weights):  # seeded: the same model twice
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    rng = np.random.default_rng(0)
    batch = {"token_ids": rng.integers(1, 64, (2, 8)).astype("int32"),
             "padding_mask": np.ones((2, 8), bool)}
    plain_jaxpr, plain_grads = _gradients(plain, batch)
    remat_jaxpr, remat_grads = _gradients(remat, batch)
    # jax.checkpoint's primitive: remat2 (printed as checkpoint in some jax versions)
    def checkpoints(jaxpr):
        return jaxpr.count("remat2[") + jaxpr.count("checkpoint[")
    assert checkpoints(plain_jaxpr) == 0
    assert checkpoints(remat_jaxpr) >= 2  # one per block
    for g, h in zip(plain_grads, remat_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(h), rtol=1e-5, atol=1e-6)

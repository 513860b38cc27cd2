"""Model FLOPs (for MFU) counted as XLA counts them, for LoRA and full fine-tuning."""

import pytest

from conftest import compose


@pytest.mark.parametrize("overrides", [[], ["lora=none"]], ids=["lora", "full"])
def test_model_flops_match_xla_cost_analysis(overrides):
    """PaLM-style model FLOPs (6 per trainable weight, 4 per frozen one, plus attention) against
    XLA's own FLOP count of the compiled gradient step of the tiny model."""
    import jax
    import jax.numpy as jnp
    import keras

    from runner import flops, model, train

    batch, length = 8, 64
    cfg = compose("mesh.shape=[1,1]", *overrides)
    the_plan, _ = train.make_plan(cfg, 1)
    per_step = flops.flops_per_token(the_plan.dimensions, the_plan.total_params,
                                     the_plan.trainable_params, length) * batch * length
    keras.backend.clear_session()
    causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
    trainable = [v.value for v in causal_lm.backbone.trainable_variables]
    frozen = [v.value for v in causal_lm.backbone.non_trainable_variables]
    x = {"token_ids": jnp.zeros((batch, length), "int32"),
         "padding_mask": jnp.ones((batch, length), "int32")}

    def loss(trainable):
        logits, _ = causal_lm.stateless_call(trainable, frozen, x, training=True)
        return keras.losses.sparse_categorical_crossentropy(
            jnp.zeros((batch, length), "int32"), logits, from_logits=True).mean()

    cost = jax.jit(jax.grad(loss)).lower(trainable).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert per_step == pytest.approx(cost["flops"], rel=0.1)


def test_peak_matmul_is_measured_on_this_machine():
    from runner.flops import peak_matmul_flops

    peak = peak_matmul_flops(size=512, repeats=2)
    assert 1e8 < peak < 1e15  # a real measurement: more than a slide rule, less than a pod

"""Model FLOPs (for MFU) counted as XLA counts them, for LoRA and full fine-tuning."""

import pytest

from conftest import compiled_gradient_step, compose


@pytest.mark.parametrize("overrides", [[], ["lora=none"]], ids=["lora", "full"])
def test_model_flops_match_xla_cost_analysis(overrides):
    """PaLM-style model FLOPs (6 per trainable weight, 4 per frozen one, plus attention) against
    XLA's own FLOP count of the compiled gradient step of the tiny model."""
    from runner import flops
    from runner.plan.assemble import make_plan

    batch, length = 8, 64
    cfg = compose("mesh.shape=[1,1]", *overrides)
    the_plan, _ = make_plan(cfg, 1)
    per_step = flops.flops_per_token(the_plan.dimensions, the_plan.total_params,
                                     the_plan.trainable_params, length) * batch * length
    cost = compiled_gradient_step(cfg, batch, length).cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert per_step == pytest.approx(cost["flops"], rel=0.1)


def test_peak_matmul_is_measured_on_this_machine():
    from runner.flops import peak_matmul_flops

    peak = peak_matmul_flops(size=512, repeats=2)
    assert 1e8 < peak < 1e15  # a real measurement: more than a slide rule, less than a pod

"""A run's sharding plan from its config, with no weights: the abstract model, the layout rules
for its family and mesh, the optimizer's slots, and the memory per device they add up to.
Used by a training run, by `python -m runner.plan` and by `python -m runner.generate`."""

from __future__ import annotations

import dataclasses

from runner import layout, mesh, model, optim
from runner.plan import Plan, plan_variables
from runner.plan import memory as mem


def abstract_optimizer_variables(optimizer_cfg, trainable_variables):
    """The optimizer's slot variables for these (stateless) trainable variables, no memory."""
    optimizer = optim.build_optimizer(optimizer_cfg)  # its two scalars are real; slots are not
    with model.no_memory_scope():
        optimizer.build(trainable_variables)
    return optimizer.variables


def make_plan(cfg, n_devices: int) -> tuple[Plan, list[layout.Rule]]:
    """The sharding plan of the run `cfg` describes on n_devices, and the layout rules behind it.
    A stage of the run (like train.run), so it reads the groups it needs from the config."""
    axis_sizes = mesh.axis_sizes(cfg.mesh, n_devices)
    backbone = model.abstract_backbone(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
    rules = layout.configured_rules(cfg.layout, type(backbone), axis_sizes, cfg.mesh)
    opt_vars = abstract_optimizer_variables(cfg.optimizer, backbone.trainable_variables)
    the_plan = plan_variables(backbone.variables, opt_vars, rules, axis_sizes,
                              batch_size=cfg.train.batch_size, batch_axis=cfg.mesh.batch_axis)
    return dataclasses.replace(the_plan, dimensions=model.dimensions(backbone)), rules


def estimate_memory(cfg, the_plan: Plan) -> mem.Memory:
    """The plan's bytes per device (weights, LoRA, gradients, optimizer, activations) at the
    run's batch, sequence length and rematerialisation."""
    return mem.memory_per_device(
        the_plan, the_plan.dimensions, cfg.train.batch_size, cfg.train.sequence_length,
        cfg.mesh.batch_axis, cfg.mesh.model_axis,
        mem.compute_itemsize(model.dtype_policy(cfg.train.precision)), str(cfg.train.remat))

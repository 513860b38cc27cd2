"""A run's sharding plan from its config, with no weights: the abstract model, the layout rules
for its family and mesh, the optimizer's slots, and the memory per device they add up to.
Used by a training run, by `python -m runner.plan` and by `python -m runner.generate`."""

from __future__ import annotations

import dataclasses

from runner import layout, mesh, model, nf4_layers, objective, optim, reference_model
from runner.derived_layout import derive
from runner.backbones import stable_names
from runner.errors import UserError
from runner.families import by_backbone
from runner.plan import Plan, plan_variables
from runner.plan import memory as mem
from runner.plan import nf4_plan


def abstract_optimizer_variables(optimizer_cfg, trainable_variables):
    """The optimizer's slot variables for these (stateless) trainable variables, no memory."""
    optimizer = optim.build_optimizer(optimizer_cfg)  # its two scalars are real; slots are not
    with model.no_memory_scope():
        optimizer.build(trainable_variables)
    return optimizer.variables


def own_layout(backbone_cls) -> str:
    """What layout=auto means for this backbone: "keras-hub" (its get_layout_map), a conf/layout
    file name, or "derived" (its family states none, or keras-hub has no map for it)."""
    family = by_backbone(backbone_cls.__name__)
    choice = family.auto_layout if family else "derived"
    if choice == "keras-hub" and not hasattr(backbone_cls, "get_layout_map"):
        return "derived"
    return choice


def configured_rules(layout_cfg, mesh_cfg, backbone, axis_sizes: dict[str, int]
                     ) -> tuple[list[layout.Rule], list[str]]:
    """(the rules a run uses, notes on what they leave whole): layout.rules as written
    (source=rules), the family's own layout (auto), or rules derived from the variables."""
    if layout_cfg.source == "rules":
        return [layout.parse_rule(name, rule) for name, rule in layout_cfg.rules.items()], []
    if layout_cfg.rules:
        raise UserError(
            f"layout.rules is set but layout.source={layout_cfg.source} ignores it; use "
            "layout.source=rules (a rules file such as layout=gemma_model_parallel) to apply "
            "your own rules")
    choice = "derived" if layout_cfg.source == "derived" else own_layout(type(backbone))
    if choice == "derived":
        return derive(backbone.variables, axis_sizes, mesh_cfg.model_axis, mesh_cfg.batch_axis,
                      bool(mesh_cfg.fsdp), int(layout_cfg.min_split_elements),
                      getattr(backbone, "hidden_dim", None))
    if choice == "keras-hub":
        rules = layout.keras_hub_rules(type(backbone), axis_sizes, mesh_cfg.model_axis,
                                       mesh_cfg.batch_axis)
    else:
        rules = layout.file_rules(choice, type(backbone).__name__)
    if not mesh_cfg.fsdp:
        rules = layout.without_axis(rules, mesh_cfg.batch_axis)
    return rules, []


def make_plan(cfg, n_devices: int, described=None) -> tuple[Plan, list[layout.Rule]]:
    """The sharding plan of the run `cfg` describes on n_devices, and the layout rules behind it.
    A stage of the run (like train.run), so it reads the groups it needs from the config;
    `described` is the check stage's description of the preset (described here if not given).
    Place variables with `the_plan.placement_rules()`: the plan's own specs, exactly."""
    axis_sizes = mesh.axis_sizes(cfg.mesh, n_devices)
    backbone = model.abstract_backbone(cfg.model, cfg.lora, cfg.quant, cfg.train.precision,
                                       described, nf4=False)
    rules, notes = configured_rules(cfg.layout, cfg.mesh, backbone, axis_sizes)
    opt_vars = abstract_optimizer_variables(cfg.optimizer, backbone.trainable_variables)
    weight_axes = [a for a, n in axis_sizes.items() if n > 1 and (
        a != cfg.mesh.batch_axis or cfg.mesh.fsdp)]
    the_plan = plan_variables(backbone.variables, opt_vars, rules, axis_sizes,
                              batch_size=cfg.train.batch_size, batch_axis=cfg.mesh.batch_axis,
                              large_replicated_bytes=int(cfg.plan.large_replicated_mb * 2**20),
                              weight_axes=weight_axes,
                              micro_batches=int(cfg.train.gradient_accumulation_steps))
    if str(cfg.quant.mode) == "int8":  # Keras's int8 skips what no linear layer holds
        the_plan = dataclasses.replace(the_plan, problems=the_plan.problems + (
            nf4_layers.outside_problems(backbone, "int8")))
    if model.four_bit(cfg.quant):  # the NF4 variables, split as their float kernels
        with model.no_memory_scope(), stable_names():
            the_plan = nf4_plan.planned(the_plan, backbone, cfg.quant, axis_sizes)
    if objective.needs_reference_copy(cfg.objective, cfg.lora):  # full fine-tuning DPO
        the_plan = reference_model.planned(the_plan)
    return dataclasses.replace(the_plan, dimensions=model.dimensions(backbone),
                               notes=notes + the_plan.notes), rules


def estimate_memory(cfg, the_plan: Plan) -> mem.Memory:
    """The plan's bytes per device (weights, LoRA, gradients, optimizer, activations) at the
    run's batch, sequence length and rematerialisation."""
    return mem.memory_per_device(
        the_plan, the_plan.dimensions, objective.rows_per_step(cfg.train, cfg.objective),
        cfg.train.sequence_length,
        cfg.mesh.batch_axis, cfg.mesh.model_axis,
        mem.compute_itemsize(model.dtype_policy(cfg.train.precision)), str(cfg.train.remat),
        int(cfg.train.gradient_accumulation_steps), _loss_tiles(cfg, the_plan))


def _loss_tiles(cfg, the_plan: Plan) -> int:
    if the_plan.dimensions is None:
        return 1
    return objective.loss_tiles(cfg.train, the_plan.axis_sizes.get(cfg.mesh.batch_axis, 1),
                                the_plan.dimensions.vocabulary, cfg.objective)

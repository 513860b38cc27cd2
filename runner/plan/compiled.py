"""`python -m runner.plan ... --compile`: XLA's own memory figure for the real train step.

The step is Keras's own train_step (forward, loss, gradients, optimizer update, metrics), of the
model the run builds (remat scope, quantization and LoRA included), lowered with jax.jit for the
configured mesh, every variable given as a jax.ShapeDtypeStruct with its planned sharding: no
weight has memory behind it, as MaxText's ahead-of-time check does. XLA's memory analysis of
the compiled SPMD program is per device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from runner import layout, model, objective, optim
from runner.errors import UserError
from runner.presets import describe


@dataclass(frozen=True)
class CompiledMemory:
    """Bytes per device of the compiled train step, as XLA's memory analysis gives them."""
    arguments: int  # weights, optimizer state, metrics, the batch
    outputs: int
    aliased: int  # outputs written into donated arguments (the updated state)
    temporaries: int  # gradients, activations, XLA's buffers
    seconds: float  # lowering and compiling

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries


def _abstract(variables, specs: dict, mesh):
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    out = []
    for v in variables:
        spec = specs.get(v.path, ())  # not in the plan (metrics, seeds): replicated
        sharding = NamedSharding(mesh, PartitionSpec(*spec))
        out.append(jax.ShapeDtypeStruct(tuple(v.shape), v.dtype, sharding=sharding))
    return out


def _abstract_batch(distribution, batch_size: int, sequence_length: int):
    import jax

    def leaf(dtype):
        sharding = distribution.get_data_layout((batch_size, sequence_length)).backend_layout
        return jax.ShapeDtypeStruct((batch_size, sequence_length), dtype, sharding=sharding)
    return {"token_ids": leaf("int32"), "padding_mask": leaf("bool")}, leaf("int32"), \
        leaf("float32")


def _abstract_model(cfg, batch, described, batch_axis_size: int):
    """The run's CausalLM, compiled with its optimizer and metrics; the weights and optimizer
    slots without memory (the task's, optimizer's and metrics' scalars are real: Keras creates
    them with values, which a StatelessScope refuses)."""
    with model.remat_scope(cfg.train.remat, described):
        backbone = model.abstract_backbone(cfg.model, cfg.lora, cfg.quant, cfg.train.precision,
                                           described)
        lm = model.causal_lm_class(described.family)(backbone=backbone, preprocessor=None)
    optimizer = optim.build_optimizer(cfg.optimizer, cfg.train.steps or 1)
    objective.compile_for_training(lm, optimizer, cfg.generate, cfg.train, batch_axis_size,
                                   cfg.seed)
    with model.no_memory_scope():
        optimizer.build(lm.trainable_variables)
        # what fit does before its first step: the compiled metrics' variables, symbolically
        lm._symbolic_build(data_batch=batch)
    return lm


def compile_train_step(cfg, the_plan, n_devices: int, described=None) -> CompiledMemory:
    """Lower and compile the run's train step on this machine's devices (there must be as many
    as the mesh has: on CPU, set cpu_devices=N)."""
    import jax
    import keras

    devices = keras.distribution.list_devices()
    if len(devices) != n_devices:
        raise UserError(f"--compile builds the step for {n_devices} devices and this machine "
                        f"has {len(devices)}; on CPU set cpu_devices={n_devices} (virtual "
                        "devices), or compile where the mesh's devices are")
    started = time.time()
    distribution = layout.distribution(cfg.mesh, the_plan.placement_rules(), devices)
    with distribution.scope():
        batch = _abstract_batch(distribution, cfg.train.batch_size, cfg.train.sequence_length)
        lm = _abstract_model(cfg, batch, described or describe(cfg.model),
                             the_plan.axis_sizes.get(cfg.mesh.batch_axis, 1))
        specs = {e.path: e.spec for e in the_plan.entries}
        mesh = distribution.device_mesh.backend_mesh
        state = tuple(_abstract(vs, specs, mesh) for vs in (
            lm.trainable_variables, lm.non_trainable_variables, lm.optimizer.variables,
            lm.metrics_variables))
        state_shardings = jax.tree.map(lambda s: s.sharding, state)
        step = jax.jit(lm.train_step, donate_argnums=0, out_shardings=(None, state_shardings))
        compiled = step.lower(state, batch).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        raise UserError(f"--compile: XLA gives no memory analysis on {devices[0].platform}")
    return CompiledMemory(
        arguments=int(analysis.argument_size_in_bytes), outputs=int(analysis.output_size_in_bytes),
        aliased=int(analysis.alias_size_in_bytes), temporaries=int(analysis.temp_size_in_bytes),
        seconds=time.time() - started)

"""`python -m runner.plan ... --compile`: the compiler's own memory figure for the real train step.

The step is the run's own train step (forward, loss, gradients, optimizer update, metrics), of
the model the run builds (remat scope, quantization and LoRA included), lowered with jax.jit for
the configured mesh, every variable given as a jax.ShapeDtypeStruct with its planned sharding: no
weight has memory behind it, as MaxText's ahead-of-time check does. The memory analysis of the
compiled SPMD program is per device.

Which compiler: for a TPU `plan.accelerator`, the TPU compiler itself (libtpu's compile-only
devices for the slice's topology: runner/plan/tpu_compiler.py), on any machine; otherwise this
machine's devices, as many as the mesh has (on CPU: cpu_devices=N), whose compiler is named
beside the figure (XLA:CPU's figure for a GPU plan is not the GPU compiler's).
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Optional

from runner import layout, model, objective, optim, reference_model
from runner.errors import UserError
from runner.plan import roofline
from runner.plan.targets import accelerator
from runner.plan.tpu_compiler import host_values_stay_on_host, topology_devices
from runner.presets import describe


@dataclass(frozen=True)
class CompiledMemory:
    """Bytes per device of the compiled train step, as the compiler's memory analysis gives
    them, and what the step costs (FLOPs, bytes, collectives per device)."""
    arguments: int  # weights, optimizer state, metrics, the batch
    outputs: int
    aliased: int  # outputs written into donated arguments (the updated state)
    temporaries: int  # gradients, activations, the compiler's buffers
    seconds: float  # lowering and compiling
    generated_code: int = 0  # the program itself (held in device memory on TPU)
    compiler: str = ""  # which compiler, in words: "TPU v3 (libtpu), topology v3:2x2"
    caveat: str = ""  # what the figure is not, when it is not the target's own compiler's
    cost: Optional[roofline.StepCost] = field(default=None, compare=False)
    # The compiler's own refusal when the step cannot fit the device (libtpu does not compile a
    # program larger than HBM); then `temporaries` is the figure it names, a lower bound.
    refused: str = ""

    @property
    def peak(self) -> int:
        return self.arguments + self.outputs - self.aliased + self.temporaries \
            + self.generated_code


@dataclass(frozen=True)
class CompileTarget:
    devices: list
    compiler: str
    caveat: str  # empty when the compiler is the planned accelerator's own
    compile_only: bool  # libtpu's devices: the model's initial values stay on the host


def compile_target(plan_cfg, n_devices: int) -> CompileTarget:
    """The devices to compile for: a TPU slice's (libtpu, any machine) when plan.accelerator is
    a TPU; else this machine's, which must be as many as the mesh's."""
    import jax
    import keras

    acc = accelerator(plan_cfg.accelerator) if plan_cfg.accelerator else None
    if acc is not None and acc.tpu:
        name, devices = topology_devices(acc, n_devices, plan_cfg.topology)
        return CompileTarget(devices, f"{devices[0].device_kind} (libtpu), topology {name}", "",
                             compile_only=True)
    devices = keras.distribution.list_devices()
    if len(devices) != n_devices:
        raise UserError(f"--compile builds the step for {n_devices} devices and this machine "
                        f"has {len(devices)}; on CPU set cpu_devices={n_devices} (virtual "
                        "devices), set plan.accelerator to a TPU (its compiler runs anywhere), or "
                        "compile where the mesh's devices are")
    device = jax.devices()[0]
    compiler = f"XLA:{device.platform.upper()} ({device.device_kind}), this machine"
    caveat = ""
    if acc is not None and device.platform == "cpu":
        caveat = (f"this is XLA:CPU's figure, not {acc.name}'s compiler's: XLA:CPU computes "
                  "bfloat16 work in float32 and fuses differently, so it can differ from the "
                  "GPU's (run --compile on the GPU itself for its figure)")
    return CompileTarget(devices, compiler, caveat, compile_only=False)


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
    if objective.needs_reference_copy(cfg.objective, cfg.lora):
        with model.no_memory_scope():
            reference_model.attach(lm, copy_values=False)
    optimizer = optim.build_optimizer(cfg.optimizer, cfg.train.steps or 1)
    objective.compile_for_training(lm, optimizer, cfg.generate, cfg.train, batch_axis_size,
                                   cfg.seed, cfg.objective)
    with model.no_memory_scope():
        optimizer.build(lm.trainable_variables)
        # what fit does before its first step: the compiled metrics' variables, symbolically
        lm._symbolic_build(data_batch=batch)
    return lm


# libtpu's refusals: "the total memory required for HLO temporaries (170.61G) exceeds available
# HBM (15.48G)", and in other releases "Used 20.5G of 15.48G hbm"; sizes in binary units.
_REFUSALS = (re.compile(r"required for [^(]*\((?P<size>[\d.]+)(?P<unit>[KMGT])\) exceeds available"),
             re.compile(r"Used (?P<size>[\d.]+)(?P<unit>[KMGT]) of [\d.]+[KMGT] hbm"))


def _refused_bytes(message: str) -> Optional[int]:
    """The bytes the compiler said it needed when it refused a program for lack of memory (0:
    refused, no size given); None when the message is no such refusal."""
    if "RESOURCE_EXHAUSTED" not in message:
        return None
    for pattern in _REFUSALS:
        m = pattern.search(message)
        if m:
            return int(float(m["size"]) * 1024 ** (" KMGT".index(m["unit"])))
    return 0


def compile_train_step(cfg, the_plan, n_devices: int, described=None) -> CompiledMemory:
    """Lower and compile the run's train step for the planned devices (compile_target)."""
    import jax

    target = compile_target(cfg.plan, n_devices)
    started = time.time()
    placement = host_values_stay_on_host() if target.compile_only else contextlib.nullcontext()
    distribution = layout.distribution(cfg.mesh, the_plan.placement_rules(), target.devices)
    with placement, distribution.scope():
        batch = _abstract_batch(distribution, objective.rows_per_step(cfg.train, cfg.objective),
                                cfg.train.sequence_length)
        lm = _abstract_model(cfg, batch, described or describe(cfg.model),
                             the_plan.axis_sizes.get(cfg.mesh.batch_axis, 1))
        specs = {e.path: e.spec for e in the_plan.entries}
        mesh = distribution.device_mesh.backend_mesh
        state = tuple(_abstract(vs, specs, mesh) for vs in (
            lm.trainable_variables, lm.non_trainable_variables, lm.optimizer.variables,
            lm.metrics_variables))
        state_shardings = jax.tree.map(lambda s: s.sharding, state)
        step = jax.jit(lm.train_step, donate_argnums=0, out_shardings=(None, state_shardings))
        lowered = step.lower(state, batch)
        try:
            compiled = lowered.compile()
        except Exception as exc:  # jax's JaxRuntimeError; only an out-of-memory one is ours
            needed = _refused_bytes(str(exc))
            if needed is None:
                raise
            return CompiledMemory(arguments=0, outputs=0, aliased=0, temporaries=needed,
                                  seconds=time.time() - started, compiler=target.compiler,
                                  caveat=target.caveat, refused=str(exc).strip().splitlines()[0])
    analysis = compiled.memory_analysis()
    if analysis is None:
        raise UserError(f"--compile: {target.compiler} gives no memory analysis")
    return CompiledMemory(
        arguments=int(analysis.argument_size_in_bytes), outputs=int(analysis.output_size_in_bytes),
        aliased=int(analysis.alias_size_in_bytes), temporaries=int(analysis.temp_size_in_bytes),
        seconds=time.time() - started,
        generated_code=int(getattr(analysis, "generated_code_size_in_bytes", 0) or 0),
        compiler=target.compiler, caveat=target.caveat,
        cost=roofline.step_cost(compiled, n_devices))

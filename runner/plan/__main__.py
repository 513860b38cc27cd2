"""`python -m runner.plan [overrides]`: the sharding plan and memory per device of the run those
overrides describe, with no weights, no accelerator and no download, in seconds.

    python -m runner.plan model=gemma2_27b_en mesh=2x8 plan.accelerator=tpu-v5p
    python -m runner.plan model=gemma_7b_en mesh.shape=[4,16] --all --json plan.json

It composes the same config as `python -m runner` (same groups, same overrides), builds every
variable with keras.StatelessScope(initialize_variables=False) and plans for the devices the mesh
names, which this machine need not have. Exit code 2 when there is any problem (each printed with
its fix), 0 otherwise. Writes nothing unless --json is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from runner import flops, objective, startup
from runner.checks import run_checks
from runner.config import compose, validate
from runner.model import backbone_class, dtype_policy
from runner.plan import memory as mem
from runner.plan import report
from runner.plan.assemble import estimate_memory, make_plan, own_layout
from runner.plan import roofline
from runner.plan.compiled import compile_train_step
from runner.plan.targets import accelerator
from runner.presets import describe


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m runner.plan", description=__doc__.split("\n\n")[0],
        epilog="Overrides are the training run's: model=gemma_7b_en mesh=1x8 lora=rank16 "
               "layout.rules.embedding.axes=[null,model] experiment=... Plan keys: "
               "plan.accelerator, plan.device_memory_gb, plan.devices.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m runner")
    parser.add_argument("--all", action="store_true",
                        help="list every variable instead of one row per layer pattern")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write the plan (every variable, totals, problems) as JSON")
    parser.add_argument("--compile", action="store_true",
                        help="also lower and compile the real train step for the mesh (weights "
                             "without memory): the compiler's memory per device decides fit, "
                             "with the estimate beside it and a predicted step time; a TPU "
                             "plan.accelerator is compiled by libtpu on any machine (the "
                             "tpu-plan extra), others need the mesh's devices here (CPU: "
                             "cpu_devices=N)")
    return parser.parse_args(argv)


def planned_devices(cfg) -> tuple[int, int]:
    """(devices to plan for, this machine's device count). A mesh without -1 names its own."""
    import keras

    local = len(keras.distribution.list_devices())
    if cfg.plan.devices is not None:
        return cfg.plan.devices, local
    shape = [int(s) for s in cfg.mesh.shape]
    if -1 not in shape and all(s > 0 for s in shape):
        return math.prod(shape), local
    return local, local


def _layout_source(cfg, described) -> str:
    if cfg.layout.source != "auto":
        return f"layout.source={cfg.layout.source}"
    cls = backbone_class(described.family)
    own = own_layout(cls)
    if own == "keras-hub":
        return f"layout=auto, {cls.__name__}.get_layout_map"
    if own == "derived":
        return f"layout=auto, derived (no layout map for {cls.__name__})"
    return f"layout=auto, conf/layout/{own}.yaml"


def _header(cfg, described, n_devices: int, rules) -> list[str]:
    lora = f"LoRA rank {cfg.lora.rank}" if cfg.lora.rank else "no LoRA (every weight trains)"
    return [
        f"Plan for model.preset={cfg.model.preset} (family {described.family}, architecture "
        f"from {described.source}) on {n_devices} devices, mesh.shape={list(cfg.mesh.shape)} "
        f"axes {list(cfg.mesh.axis_names)}",
        f"{_layout_source(cfg, described)} ({len(rules)} rules) | {lora} | quant={cfg.quant.mode} | "
        f"precision={dtype_policy(cfg.train.precision)} | optimizer={cfg.optimizer.name} | "
        f"batch {cfg.train.batch_size} x {cfg.train.sequence_length} tokens",
    ]


def plan_for(cfg) -> dict:
    """Everything `python -m runner.plan` prints, as objects (tests call this too): the check
    stage's problems and notes (runner/checks.py), then the plan's own and the memory fit."""
    n_devices, local = planned_devices(cfg)
    findings = run_checks(cfg, n_devices, for_training=False)
    described = findings.described or describe(cfg.model)  # the latter raises why it cannot be
    the_plan, rules = make_plan(cfg, n_devices, described)
    memory = estimate_memory(cfg, the_plan)
    device = mem.device_memory(cfg.plan, n_devices, local)
    fit = mem.fit_problem(memory, device)
    problems = findings.problems + [p for p in the_plan.problems if p not in findings.problems]
    the_plan = dataclasses.replace(the_plan, problems=problems + ([fit] if fit else []))
    micro = int(cfg.train.gradient_accumulation_steps)
    batch_axis = max(1, the_plan.axis_sizes.get(cfg.mesh.batch_axis, 1))
    per_device = objective.rows_per_step(cfg.train, cfg.objective) // micro // batch_axis
    tiles = objective.loss_tiles(cfg.train, batch_axis, the_plan.dimensions.vocabulary,
                                 cfg.objective) \
        if the_plan.dimensions else 1
    pairs = objective.rows_per_step(cfg.train, cfg.objective) != cfg.train.batch_size
    note = (f"estimate: batch {per_device} x {cfg.train.sequence_length} tokens per device"
            + (" (preference pairs: a chosen and a rejected row each)" if pairs else "")
            + (f" (one of {micro} micro-batches)" if micro > 1 else "")
            + f", the loss over {tiles} tile{'s' * (tiles > 1)} of the sequence, "
            f"train.remat={cfg.train.remat}"
            + (" (with a model axis the compiler splits activations its own way: the estimate "
               "was 0.38x to 2.4x the TPU compiler's figure over the calibration grid; "
               "--compile gives the figure)"
               if the_plan.axis_sizes.get(cfg.mesh.model_axis, 1) > 1 else "")
            if the_plan.dimensions else
            "not estimated for this model family")
    return {"plan": the_plan, "rules": rules, "described": described, "memory": memory, "device": device, "fit": fit,
            "fits": None if device.bytes is None else fit is None, "n_devices": n_devices,
            "activation_note": note, "loss_tiles": tiles,
            "notes": findings.notes + objective.plan_notes(cfg.objective, cfg.lora)}


def _peak_rss_gb() -> float:
    return mem.peak_rss_bytes() / 2**30


COMPILED_NEEDS = "the compiled step"


def _verdict_from_compiled(the_plan, result, compiled):
    """The plan's problems with the estimate's fit replaced by the compiled figure's."""
    fit = mem.need_problem(compiled.peak, f"{COMPILED_NEEDS}'s figure ({compiled.compiler}) of",
                           result["device"])
    if compiled.refused and fit is None:  # the compiler knows its chip's memory: it decides
        fit = (f"{COMPILED_NEEDS} was refused by {compiled.compiler} for lack of memory "
               f"({compiled.refused}); split more (a larger model or batch axis in mesh.shape), "
               "freeze more (LoRA, quant=int8), or lower train.batch_size / "
               "train.sequence_length")
    problems = [p for p in the_plan.problems if p != result["fit"]] + ([fit] if fit else [])
    return dataclasses.replace(the_plan, problems=problems)


def predicted_step(cfg, the_plan, compiled, n_devices: int):
    """The roofline step time on plan.accelerator (None without one, or without a cost)."""
    if not cfg.plan.accelerator or compiled.cost is None:
        return None
    acc = accelerator(cfg.plan.accelerator)
    tokens = objective.rows_per_step(cfg.train, cfg.objective) * cfg.train.sequence_length
    model_flops = flops.flops_per_token(the_plan.dimensions, the_plan.total_params,
                                        the_plan.trainable_params, cfg.train.sequence_length,
                                        objective.has_reference(cfg.objective)
                                        ) * tokens if the_plan.dimensions else 0.0
    # XLA's cost analysis counts a loop's body once: the micro-batches' scan is the whole
    # forward and backward, so its FLOPs and bytes count micro-batches times (the optimizer's
    # update, outside the loop, is then overcounted: small beside the step)
    micro = int(cfg.train.gradient_accumulation_steps)
    cost = dataclasses.replace(compiled.cost, flops=compiled.cost.flops * micro,
                               bytes_accessed=compiled.cost.bytes_accessed * micro)
    return roofline.predict(cost, acc.peak_for(cfg.train.precision), acc.memory_bandwidth,
                            acc.interconnect, n_devices, tokens, model_flops)


@startup.command
def main(argv=None) -> int:
    start = time.time()
    args = _parse(argv)

    cfg = compose(args.overrides, job_name="plan")
    validate(cfg)
    startup.start(cfg, join_program=False)

    result = plan_for(cfg)
    planned_s, planned_rss = time.time() - start, _peak_rss_gb()
    the_plan = result["plan"]
    compiled = prediction = None
    compile_note = ""
    if args.compile:  # a step that does not fit is still worth sizing; a broken plan is not
        if [p for p in the_plan.problems if p != result["fit"]]:
            compile_note = "Not compiled (--compile): fix the problems above first."
        else:
            print("Compiling the train step for the planned devices (--compile)...", flush=True)
            compiled = compile_train_step(cfg, the_plan, result["n_devices"],
                                          result["described"])
            the_plan = _verdict_from_compiled(the_plan, result, compiled)
            prediction = predicted_step(cfg, the_plan, compiled, result["n_devices"])
    print(report.render(the_plan, result["memory"], result["device"],
                        _header(cfg, result["described"], result["n_devices"],
                                result["rules"]),
                        result["activation_note"], args.all, compiled=compiled))
    for note in result["notes"]:
        print(f"Note: {note}")
    # Evidence that no weights were built: a 27B model's would take 100 GB.
    print(f"Planned in {planned_s:.1f} s with {planned_rss:.2f} GB peak host "
          "memory (no weights built).")
    if compile_note:
        print(compile_note)
    if compiled is not None:
        print(report.render_compiled(compiled, result["memory"], prediction,
                                     cfg.plan.accelerator, result["loss_tiles"]))
    if args.json:
        fits = result["fits"] if compiled is None or result["device"].bytes is None else \
            not any(p.startswith(COMPILED_NEEDS) for p in the_plan.problems)
        out = report.as_json(the_plan, result["memory"], result["device"], fits)
        if compiled is not None:
            out["compiled"] = {**{k: v for k, v in dataclasses.asdict(compiled).items()
                                  if k != "cost"}, "peak": compiled.peak,
                               "estimate_over_compiled": result["memory"].total / compiled.peak}
            out["compiled"]["cost"] = None if compiled.cost is None else {
                "flops": compiled.cost.flops, "bytes_accessed": compiled.cost.bytes_accessed,
                "collective_bytes": compiled.cost.collectives,
                "compiler_seconds": compiled.cost.compiler_seconds}
            if prediction is not None:
                out["predicted_step"] = {
                    "accelerator": cfg.plan.accelerator, "step_s": prediction.step_s,
                    "compute_s": prediction.compute_s, "memory_s": prediction.memory_s,
                    "collective_s": prediction.collective_s, "bound": prediction.bound,
                    "tokens_per_s": prediction.tokens_per_s, "mfu": prediction.mfu}
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 2 if the_plan.problems else 0


if __name__ == "__main__":
    sys.exit(main())

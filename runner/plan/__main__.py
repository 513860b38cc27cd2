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

from runner.errors import UserError

CONF = Path(__file__).resolve().parents[2] / "conf"


def _parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m runner.plan", description=__doc__.split("\n\n")[0],
        epilog="Overrides are the training run's: model=gemma_7b_en mesh=1x8 lora=rank16 "
               "layout.rules.embedding.axes=[null,model] +experiment=... Plan keys: "
               "plan.accelerator, plan.device_memory_gb, plan.devices.")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for python -m runner")
    parser.add_argument("--all", action="store_true",
                        help="list every variable instead of one row per layer pattern")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write the plan (every variable, totals, problems) as JSON")
    return parser.parse_args(argv)


def compose(overrides):
    """The config `python -m runner OVERRIDES` would run."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from runner.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name="plan"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def planned_devices(cfg) -> tuple[int, int]:
    """(devices to plan for, this machine's device count). A mesh without -1 names its own."""
    import keras

    local = len(keras.distribution.list_devices())
    if cfg.plan.devices is not None:
        if cfg.plan.devices < 1:
            raise UserError(f"plan.devices={cfg.plan.devices} must be positive")
        return cfg.plan.devices, local
    shape = [int(s) for s in cfg.mesh.shape]
    if -1 not in shape and all(s > 0 for s in shape):
        return math.prod(shape), local
    return local, local


def _layout_source(cfg) -> str:
    from runner.layout import AUTO_RULE_FILES
    from runner.model import backbone_class

    if getattr(cfg.layout.source, "value", cfg.layout.source) != "auto":
        return "layout.rules"
    cls = backbone_class(cfg.model.family)
    if hasattr(cls, "get_layout_map"):
        return f"layout=auto, {cls.__name__}.get_layout_map"
    return f"layout=auto, conf/layout/{AUTO_RULE_FILES.get(cls.__name__)}.yaml"


def _header(cfg, n_devices: int, rules) -> list[str]:
    from runner.model import dtype_policy

    lora = f"LoRA rank {cfg.lora.rank}" if cfg.lora.rank else "no LoRA (every weight trains)"
    quant = getattr(cfg.quant.mode, "value", cfg.quant.mode)
    return [
        f"Plan for model.preset={cfg.model.preset} (family {cfg.model.family}) on {n_devices} "
        f"devices, mesh.shape={list(cfg.mesh.shape)} axes {list(cfg.mesh.axis_names)}",
        f"{_layout_source(cfg)} ({len(rules)} rules) | {lora} | quant={quant} | "
        f"precision={dtype_policy(cfg.train.precision)} | "
        f"optimizer={getattr(cfg.optimizer.name, 'value', cfg.optimizer.name)} | "
        f"batch {cfg.train.batch_size} x {cfg.train.sequence_length} tokens",
    ]


def plan_for(cfg) -> dict:
    """Everything `python -m runner.plan` prints, as objects (tests call this too)."""
    from runner import train
    from runner.plan import memory as mem

    n_devices, local = planned_devices(cfg)
    the_plan, rules = train.make_plan(cfg, n_devices)
    memory = train.memory_per_device(cfg, the_plan)
    device = mem.device_memory(cfg.plan, n_devices, local)
    fit = mem.fit_problem(memory, device)
    if fit:
        the_plan = dataclasses.replace(the_plan, problems=the_plan.problems + [fit])
    per_device = cfg.train.batch_size // max(1, the_plan.axis_sizes.get(cfg.mesh.batch_axis, 1))
    note = (f"estimate: batch {per_device} x {cfg.train.sequence_length} tokens per device, "
            "no rematerialisation" if the_plan.dimensions else
            "not estimated for this model family")
    return {"plan": the_plan, "rules": rules, "memory": memory, "device": device,
            "fits": None if device.bytes is None else fit is None, "n_devices": n_devices,
            "activation_note": note}


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KB on Linux


def main(argv=None) -> int:
    start = time.time()
    args = _parse(argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(args.overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2

    from runner.environment import quiet_library_loggers, set_process_environment

    set_process_environment(cfg.cpu_devices)
    quiet_library_loggers()
    from runner.plan import report

    try:
        result = plan_for(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    the_plan = result["plan"]
    print(report.render(the_plan, result["memory"], result["device"],
                        _header(cfg, result["n_devices"], result["rules"]),
                        result["activation_note"], args.all))
    # Evidence that no weights were built: a 27B model's would take 100 GB.
    print(f"Planned in {time.time() - start:.1f} s with {_peak_rss_gb():.2f} GB peak host "
          "memory (no weights built).")
    if args.json:
        args.json.write_text(json.dumps(
            report.as_json(the_plan, result["memory"], result["device"], result["fits"]),
            indent=1) + "\n")
    return 2 if the_plan.problems else 0


if __name__ == "__main__":
    sys.exit(main())

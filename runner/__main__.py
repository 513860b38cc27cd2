"""`python -m runner [overrides]`: train one experiment; `-m` runs a sweep.

The only module that reads Hydra's runtime state or sets process-wide environment, and it does
both before jax, keras or tensorflow is imported (they read it once, at import).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.config import register_configs
from runner.environment import (quiet_library_loggers, set_process_environment,
                                use_compilation_cache)
from runner.errors import UserError

log = logging.getLogger("runner")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train one job. In a sweep (-m), a failing job is recorded (its summary.json says failed
    and why) and the sweep goes on; runner.sweep.SweepSummary lists the failures at the end.
    Returns the job's objective for sweepers such as Optuna: the final eval loss if the run
    evaluates, else the final training loss (nan for a failed job)."""
    set_process_environment(cfg.cpu_devices)
    quiet_library_loggers()
    use_compilation_cache(cfg.compilation_cache_dir)
    from runner import distributed

    try:  # before anything asks JAX for devices
        distributed.initialize(cfg.distributed)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
    from runner import train
    from runner.outputs import RunDirTaken

    run_name = group = None
    if in_sweep:  # W&B: one group per sweep, each run named by what it overrides
        group = f"{cfg.name}-{Path(hydra_cfg.sweep.dir).name}"
        run_name = hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"
    try:
        summary = train.run(cfg, run_dir, run_name=run_name, group=group)
    except UserError as exc:
        if not isinstance(exc, RunDirTaken):
            train.fail(run_dir, exc)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        if in_sweep:
            return math.nan
        sys.exit(2)
    except Exception as exc:
        train.fail(run_dir, exc)
        if distributed.peer_stopped(exc):
            distributed.exit_after_peer_stopped(exc)
        if not in_sweep:
            raise
        log.exception("job %s failed; the sweep goes on", run_dir)
        return math.nan
    except BaseException as exc:  # KeyboardInterrupt, SystemExit: stop everything
        train.fail(run_dir, exc)
        raise
    return summary.get("final_eval_loss", summary.get("final_loss", math.nan))


if __name__ == "__main__":
    register_configs()
    main()

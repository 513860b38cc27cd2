"""`python -m runner [overrides]`: train one experiment; `-m` runs a sweep.

A thin wrapper, so that train.run(cfg, run_dir) stays testable without the CLI: it reads Hydra's
runtime state (the run folder, sweep or not), starts the process (runner.startup) and turns the
outcome into an exit code or, in a sweep, the job's objective.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner import distributed, startup
from runner.config import validate
from runner.errors import UserError
from runner.rundir import RunDir, RunDirTaken
from runner.stopping import Stopped

log = logging.getLogger("runner")


def wandb_names(cfg, hydra_cfg) -> dict:
    """In a sweep, W&B groups the jobs (one group per sweep) and names each by its overrides."""
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return {}
    return {"group": f"{cfg.name}-{Path(hydra_cfg.sweep.dir).name}",
            "run_name": hydra_cfg.job.override_dirname or f"job{hydra_cfg.job.num}"}


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train one job. In a sweep (-m), a failing job is recorded (its summary.json says failed
    and why) and the sweep goes on; runner.sweep.SweepSummary lists the failures at the end.
    A stop signal (runner.stopping) ends the job with a checkpoint, and the process (the sweep
    too: the scheduler wants it gone) with 128 + the signal's number.
    Returns the job's objective for sweepers such as Optuna: the final eval loss if the run
    evaluates, else the final training loss (nan for a failed job)."""
    hydra_cfg = HydraConfig.get()
    folder = RunDir(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN

    try:
        validate(cfg)
        startup.start(cfg)
        from runner import train

        summary = train.run(cfg, folder.path, **wandb_names(cfg, hydra_cfg))
    except Stopped as stop:  # a stop signal: the folder says so; a sweep stops here too
        raise SystemExit(stop.request.exit_code) from None
    except UserError as exc:
        if not isinstance(exc, RunDirTaken):
            folder.fail(exc)
        if startup.full_error_wanted():
            raise
        startup.report(exc)
        if in_sweep:
            return math.nan
        raise SystemExit(2) from None
    except Exception as exc:
        folder.fail(exc)
        if distributed.peer_stopped(exc):
            distributed.exit_after_peer_stopped(exc)
        if not in_sweep:
            raise
        log.exception("job %s failed; the sweep goes on", folder.path)
        return math.nan
    except KeyboardInterrupt as exc:  # Ctrl-C while starting, before the run listens for it
        folder.fail(exc, status="interrupted")
        raise
    except BaseException as exc:  # SystemExit: stop everything
        folder.fail(exc)
        raise
    return summary.get("final_eval_loss", summary.get("final_loss", math.nan))


if __name__ == "__main__":
    startup.hydra_cli(main)

"""`python -m runner [overrides]`: train one experiment; `-m` runs a sweep.

The only module that reads Hydra's runtime state or sets process-wide environment, and it does
both before jax, keras or tensorflow is imported (they read it once, at import).
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner.config import register_configs
from runner.environment import quiet_library_loggers, set_process_environment
from runner.errors import UserError

log = logging.getLogger("runner")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    set_process_environment(cfg.cpu_devices)
    quiet_library_loggers()
    run_dir = HydraConfig.get().runtime.output_dir
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
    from runner import train
    from runner.outputs import RunDirTaken

    try:
        train.run(cfg, run_dir)
    except UserError as exc:
        if not isinstance(exc, RunDirTaken):
            train.fail(run_dir, exc)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except BaseException as exc:
        train.fail(run_dir, exc)
        raise


if __name__ == "__main__":
    register_configs()
    main()

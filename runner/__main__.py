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
from runner.errors import UserError

log = logging.getLogger("runner")


def set_process_environment(cpu_devices: int) -> None:
    """KERAS_BACKEND and the virtual CPU device count, before the first jax import."""
    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        log.warning("KERAS_BACKEND=%s ignored: the runner runs on JAX", os.environ["KERAS_BACKEND"])
    os.environ["KERAS_BACKEND"] = "jax"
    flag = "--xla_force_host_platform_device_count"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}={cpu_devices}".strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ banner is not ours to show
    os.environ.setdefault("WANDB_SILENT", "true")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    set_process_environment(cfg.cpu_devices)
    for noisy in ("jax", "absl", "h5py", "tensorflow"):  # their INFO lines are not the user's
        logging.getLogger(noisy).setLevel(logging.WARNING)
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

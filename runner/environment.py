"""Process-wide settings the entry points (runner, runner.plan, runner.generate) make before jax,
keras or tensorflow is imported: they read them once, at import. Library code never calls this."""

from __future__ import annotations

import logging
import os

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


def quiet_library_loggers() -> None:
    for noisy in ("jax", "absl", "h5py", "tensorflow"):  # their INFO lines are not the user's
        logging.getLogger(noisy).setLevel(logging.WARNING)


def use_compilation_cache(cache_dir) -> None:
    """JAX's persistent compilation cache: compiled steps are reused by later processes (sweep
    jobs under submitit, reruns, resumed runs). Every compilation is cached, however quick."""
    if not cache_dir:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

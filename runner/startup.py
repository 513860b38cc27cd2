"""One start-up for every command (python -m runner, runner.plan, runner.generate, runner.rerun,
runner.report, runner.export): the only module that sets process-wide state.

- `start(cfg)`: KERAS_BACKEND, the virtual CPU device count, quiet library loggers, JAX's
  compilation cache and (for commands that train) joining a multi-process program, in that
  order and before jax, keras or tensorflow is imported (they read it once, at import).
- `command(main)`: a user's mistake (UserError, or a compose error) ends as one `error:` line
  on stderr and exit code 2; anything else is a bug and keeps its stack trace. HYDRA_FULL_ERROR=1
  shows the stack trace of a mistake too.
- every command filters library noise off stderr (runner.noise; RUNNER_LIBRARY_LOGS=1 keeps it).
- `Preflight`: a Hydra callback that checks every value against its domain and the run folder
  before Hydra creates it, so a bad value leaves no folder at all.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from runner import distributed, noise, usage
from runner.config import (
    compose,
    compose_error_line,
    is_compose_error,
    register_configs,
    unknown_key_line,
    unknown_override_key,
    validate,
)
from runner.domains import folder_problem
from runner.errors import UserError
from runner.plan.tpu_compiler import quiet_libtpu_off_tpu
from runner.stopping import Stopped

log = logging.getLogger("runner")
# The user's own HYDRA_FULL_ERROR, kept while the CLI sets Hydra's to 1 so that compose errors
# reach runner.__main__ as exceptions (Hydra would otherwise print them and exit 1 itself).
USER_FULL_ERROR = "RUNNER_FULL_ERROR"


def set_process_environment(cpu_devices: int) -> None:
    """KERAS_BACKEND and the virtual CPU device count, before the first jax import."""
    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        log.warning("KERAS_BACKEND=%s ignored: the runner runs on JAX", os.environ["KERAS_BACKEND"])
    os.environ["KERAS_BACKEND"] = "jax"
    flag = "--xla_force_host_platform_device_count"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}={cpu_devices}".strip()
    quiet_libtpu_off_tpu()  # the tpu-plan extra's libtpu on a machine without a TPU
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ banner is not ours to show
    os.environ.setdefault("WANDB_SILENT", "true")


def quiet_library_loggers() -> None:
    for noisy in ("jax", "absl", "h5py", "tensorflow", "orbax"):  # INFO lines not the user's
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


def start(cfg, join_program: bool = True) -> None:
    """Everything process-wide a command needs, from the (validated) config. join_program:
    commands that train join the multi-process program `distributed` describes, before any
    device query; planning, sampling and exporting run in one process."""
    noise.install()  # already done by the CLI; a submitit job's process starts here
    set_process_environment(cfg.cpu_devices)
    quiet_library_loggers()
    use_compilation_cache(cfg.compilation_cache_dir)
    if join_program:
        distributed.initialize(cfg.distributed)


def log_to_file(path: Path) -> None:
    """Commands that Hydra does not start log like a Hydra run: to stderr and to a file."""
    logging.basicConfig(level=logging.INFO, handlers=[logging.StreamHandler(),
                                                      logging.FileHandler(path)],
                        format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")


def full_error_wanted() -> bool:
    return os.environ.get(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


def report(exc: BaseException) -> None:
    """The one line a user sees for a mistake."""
    text = compose_error_line(exc) if is_compose_error(exc) else str(exc)
    print(f"error: {text}", file=sys.stderr, flush=True)


def command(main):
    """Wrap a command's main(argv) -> exit code: mistakes become one line and exit code 2."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        noise.install()
        try:
            return main(*args, **kwargs)
        except Stopped as stop:  # runner.rerun's run, stopped by a signal: the log said why
            return stop.request.exit_code
        except KeyboardInterrupt:
            return interrupted()
        except Exception as exc:
            if not (isinstance(exc, UserError) or is_compose_error(exc)) or full_error_wanted():
                raise
            report(exc)
            return 2
    return wrapped


def hydra_cli(hydra_main) -> None:
    """Run a @hydra.main function as `python -m runner` does: compose errors (unknown key, wrong
    type, unknown group option) become one `error:` line and exit 2, like the runner's checks."""
    noise.install()  # before anything loads TensorFlow

    register_configs()
    os.environ.setdefault(USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing; we print
    try:
        _own_flags(sys.argv[1:])
        hydra_main()
    except KeyboardInterrupt:
        sys.exit(interrupted())
    except Exception as exc:
        line = environment_error_line(exc)
        if line is None and (not (isinstance(exc, UserError) or is_compose_error(exc))
                             or full_error_wanted()):
            raise
        if line is not None:
            print(f"error: {line}", file=sys.stderr, flush=True)
        else:
            report(exc)
        sys.exit(2)


def _own_flags(args: list[str]) -> None:
    """--help: the runner's own (runner.usage), generated from the schema. --cfg: the printed
    config is checked as a run checks it, so it never shows values a run would refuse."""
    if "--help" in args or "-h" in args:
        print(usage.text(), end="")
        sys.exit(0)
    if ("--cfg" in args or "-c" in args) and not any(a.startswith(_OTHER_CONFIG) for a in args):
        valued = {"--cfg", "-c", "-p", "--package", "--info", "-i"}  # flags that take a value
        overrides = [a for i, a in enumerate(args)
                     if not a.startswith("-") and (i == 0 or args[i - 1] not in valued)]
        validate(compose(overrides))


# Another config than conf/config.yaml: the printed one is not what compose() would check.
_OTHER_CONFIG = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")


def environment_error_line(exc: BaseException):
    """One line for what a launcher raises when the machine lacks what it needs (a bug would
    keep its stack trace), or None."""
    if 'Could not detect "srun"' in str(exc):
        return ("hydra/launcher=slurm needs a SLURM cluster (sbatch and srun on this machine); "
                "to run the sweep's jobs here as processes, use hydra/launcher=submitit_local")
    return None


def interrupted() -> int:
    """Ctrl-C outside a training run's own handling (starting up, planning, exporting): one
    line instead of a stack trace, and the shell's code for SIGINT."""
    if full_error_wanted():
        raise KeyboardInterrupt
    print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
    return 130


class Preflight(Callback):
    """Before Hydra makes the run folder: every value in its domain, and a folder that can be
    made and written. A mistake here leaves nothing behind."""

    def on_run_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        self._check(config, "hydra.run.dir", OmegaConf.select(config, "hydra.run.dir"))

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf

        self._check(config, "hydra.sweep.dir", OmegaConf.select(config, "hydra.sweep.dir"),
                    values=False)  # each job's values are checked when it starts

    @staticmethod
    def _check(config, key: str, folder, values: bool = True) -> None:
        from omegaconf import OmegaConf

        try:
            if values:
                validate(config)
            else:  # a sweep: its jobs are composed later, but a key no job has fails them all
                unknown = unknown_override_key(OmegaConf.select(config, "hydra.overrides.task",
                                                                default=[]))
                if unknown:
                    raise UserError(unknown_key_line(unknown))
            problem = folder_problem(Path(str(folder)).expanduser())
            if problem:
                raise UserError(f"{key}={folder} {problem}; choose another {key}")
        except UserError as exc:
            if full_error_wanted():
                raise
            report(exc)
            sys.exit(2)

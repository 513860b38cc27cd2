"""Process environment for tests, set before jax/keras/tensorflow can be imported (the same
settings runner.startup makes for the commands), plus helpers to compose configs and run the CLI.

Lanes: `python -m pytest` runs everything (CI); `python -m pytest -m "not slow"` is the fast lane
(in-process tests only). Tests that run a command as a subprocess are marked slow.
Hermetic: RUNNER_OFFLINE=1 makes every network probe say "unreachable", so the offline
behaviour the tests check holds on a machine that is online too."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "runner" / "conf"  # the top-level conf/ links here
_SCRATCH = Path(tempfile.mkdtemp(prefix="runner-tests-"))

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["KERAS_HOME"] = str(_SCRATCH / "keras")  # keras.json lands here, not in ~
os.environ["TFDS_DATA_DIR"] = str(_SCRATCH / "tfds")  # each session prepares tiny_reviews anew
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["WANDB_SILENT"] = "true"
os.environ.pop("WANDB_API_KEY", None)  # never talk to a real W&B account from tests
os.environ["RUNNER_OFFLINE"] = "1"  # hermetic: no test depends on this machine's network
# One JAX persistent compilation cache for the session, this process and every command a test
# starts: dozens of tests compile the same tiny model's steps, and a compiled program is the
# same program (the cache is keyed by the program, its options and the devices), so results do
# not change; only time does. A test that sets compilation_cache_dir uses its own.
os.environ["JAX_COMPILATION_CACHE_DIR"] = str(_SCRATCH / "jax-cache")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
from runner.plan.tpu_compiler import quiet_libtpu_off_tpu  # noqa: E402  (imports no jax)

quiet_libtpu_off_tpu()  # the test extra's libtpu (TPU compile tests) on a machine without a TPU


def compose(*overrides: str):
    """The config `python -m runner *overrides` would run, composed the same way."""
    from runner.config import compose as runner_compose

    return runner_compose(overrides)


def run_cli(*args: str, cwd: Path, module: str = "runner", timeout: int = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m runner ARGS` as a user would, in `cwd`."""
    full_env = dict(os.environ)
    for name in ("HYDRA_FULL_ERROR", "RUNNER_FULL_ERROR"):
        full_env.pop(name, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


_HIDER = '''
import importlib.machinery, os
HIDDEN = {hidden!r}
_find = importlib.machinery.PathFinder.find_spec
def _find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] in HIDDEN:
        return None  # as if not installed: find_spec says None, import raises
    return _find(name, path, target)
importlib.machinery.PathFinder.find_spec = classmethod(_find_spec)
open(os.path.join(os.path.dirname(__file__), f"started-{{os.getpid()}}"), "w").close()
'''


def hide_packages(folder: Path, names) -> Path:
    """A folder whose sitecustomize.py makes the packages `names` unimportable, as if they were
    not installed, in every Python process that has the folder first on PYTHONPATH (with_path).
    Each such process leaves a file started-<pid> in it, so a test can tell it took effect."""
    folder.mkdir(parents=True)
    (folder / "sitecustomize.py").write_text(_HIDER.format(hidden=tuple(names)))
    return folder


def with_path(folder: Path) -> str:
    """PYTHONPATH with `folder` first (its sitecustomize wins), the rest kept."""
    return os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


def compiled_gradient_step(cfg, batch: int, length: int):
    """XLA's compiled gradient step (w.r.t. the trainable weights) of the model `cfg` builds,
    on one device: what its memory_analysis() and cost_analysis() describe."""
    import jax
    import jax.numpy as jnp
    import keras

    from runner import model

    keras.backend.clear_session()
    causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
    trainable = [v.value for v in causal_lm.backbone.trainable_variables]
    frozen = [v.value for v in causal_lm.backbone.non_trainable_variables]
    x = {"token_ids": jnp.zeros((batch, length), "int32"),
         "padding_mask": jnp.ones((batch, length), "int32")}

    def loss(trainable, frozen):
        logits, _ = causal_lm.stateless_call(trainable, frozen, x, training=True)
        return keras.losses.sparse_categorical_crossentropy(
            jnp.zeros((batch, length), "int32"), logits, from_logits=True).mean()

    return jax.jit(jax.grad(loss)).lower(trainable, frozen).compile()

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

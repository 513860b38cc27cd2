"""The TPU compiler on any machine: libtpu's compile-only devices for a named topology.

With libtpu installed (`pip install -e '.[tpu-plan]'`), jax.experimental.topologies gives the
devices of a TPU slice this machine does not have; a step jitted over a mesh of them lowers and
compiles with the real TPU compiler (no TPU, no weights), as MaxText's train_compile does. The
compiled program cannot run: only its memory and cost analyses are read.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
from pathlib import Path

from runner.errors import UserError
from runner.plan.targets import Accelerator, topology_name

_GOOGLE_PCI_VENDOR = "0x1ae0"
# PCI device ids of TPU chips (jax._src.hardware_utils): v3, v4, v5p, v5e, v6e, 7x and an
# unnamed one
_TPU_PCI_DEVICES = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}
INSTALL = "pip install -e '.[tpu-plan]'"
_STANDIN = "RUNNER_LIBTPU_STANDIN"  # marks the variables below as set by quiet_libtpu_off_tpu
_STANDIN_VARIABLES = {"TPU_ACCELERATOR_TYPE": "v3-8", "TPU_WORKER_HOSTNAMES": "localhost",
                      "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"}


def _tpu_attached() -> bool:
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        folder = Path(vendor).parent
        try:
            if (Path(vendor).read_text().strip() == _GOOGLE_PCI_VENDOR
                    and (folder / "device").read_text().strip() in _TPU_PCI_DEVICES):
                return True
        except OSError:
            continue
    return False


def quiet_libtpu_off_tpu() -> None:
    """Where libtpu is installed but no TPU is attached, name a stand-in slice for it: libtpu
    otherwise asks for its accelerator type and worker hosts at every JAX start and prints three
    error lines when it finds none (it then leaves JAX on the CPU, as it does with these set).
    Its lock file, which keeps two processes off one TPU, is lifted too: with no TPU to guard it
    only stops a second process (a test's command, a sweep's plan) from compiling. A TPU VM is
    left to libtpu and jax. Call before JAX initializes its backends."""
    if importlib.util.find_spec("libtpu") is None:
        return
    if _tpu_attached():
        # a job started from a TPU-less machine (submitit, a script) inherits the stand-in:
        # on a TPU host it must not reach libtpu
        if os.environ.pop(_STANDIN, None):
            for name in _STANDIN_VARIABLES:
                os.environ.pop(name, None)
        return
    if any(name in os.environ for name in _STANDIN_VARIABLES):
        return  # the user's or a parent's own settings
    os.environ.update(_STANDIN_VARIABLES)
    os.environ[_STANDIN] = "1"


def topology_devices(acc: Accelerator, n_devices: int, given_topology):
    """(name, devices) of the TPU slice to compile for; its device count must be the mesh's."""
    if importlib.util.find_spec("libtpu") is None:
        raise UserError(f"--compile with plan.accelerator={acc.name} needs the TPU compiler, "
                        f"libtpu: install it with {INSTALL} (any machine, no TPU needed), or "
                        "drop --compile for the estimate alone")
    from jax.experimental import topologies

    name = topology_name(acc, n_devices, given_topology)
    sides = [int(s) for s in name.split(":", 1)[1].split("x")]
    kwargs = {"chip_config_name": acc.chip_config}
    chips = 1
    for s in sides:
        chips *= s
    if chips < 4:  # a slice smaller than one 4-chip host (v5e-1) is its own host
        kwargs["chips_per_host_bounds"] = tuple(sides + [1] * (3 - len(sides)))
    try:
        devices = list(topologies.get_topology_desc(topology_name=name, platform="tpu",
                                                    **kwargs).devices)
    except Exception as exc:  # libtpu's own reason, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"plan.topology={name}: libtpu cannot make this TPU topology ({first}); "
                        f"give plan.topology as {acc.tpu}:AxB{'xC' * (acc.torus_dims == 3)}, a "
                        "slice of the accelerator") from None
    if len(devices) != n_devices:
        raise UserError(f"plan.topology={name} has {len(devices)} devices and the mesh "
                        f"{n_devices}; give a topology of {n_devices} devices or a mesh of "
                        f"{len(devices)}")
    return name, devices


@contextlib.contextmanager
def host_values_stay_on_host():
    """While the model is built for compile-only devices: Keras puts each variable's initial
    value on its devices, which a compile-only client cannot hold; the values (seeds, counters,
    metrics' totals: the weights have none) stay on the host instead. The step is compiled
    from their shapes and shardings alone (runner.plan.compiled), so where they are is never
    read. Inside a traced function the sharding constraint is applied as Keras does."""
    from keras.src.backend.jax import distribution_lib
    from keras.src.utils import jax_utils

    keras_own = distribution_lib.distribute_tensor

    def distribute_tensor(tensor, layout):
        if jax_utils.is_in_jax_tracing_scope(tensor):
            return keras_own(tensor, layout)
        return tensor

    distribution_lib.distribute_tensor = distribute_tensor
    try:
        yield
    finally:
        distribution_lib.distribute_tensor = keras_own

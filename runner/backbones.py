"""A family's keras-hub classes, the dtype policy of train.precision, and the scope that builds
variables with no memory behind them: what the model builder, the planner and the Hugging Face
port recorder share (runner/model.py, runner/plan/, runner/hf/ports.py)."""

from __future__ import annotations

import contextlib

from runner.errors import UserError
from runner.families import FAMILIES


def backbone_class(family: str):
    import keras_hub

    if family not in FAMILIES:
        raise UserError(f"model.family={family} is unknown; valid: {sorted(FAMILIES)}")
    return getattr(keras_hub.models, FAMILIES[family].backbone)


def causal_lm_class(family: str):
    """keras_hub.models.<Family>CausalLM: the task class that shares the backbone's prefix."""
    import keras_hub

    return getattr(keras_hub.models, FAMILIES[family].prefix + "CausalLM")


def dtype_policy(precision) -> str:
    """The keras dtype policy name for train.precision."""
    return str(precision)


@contextlib.contextmanager
def no_memory_scope():
    """keras.StatelessScope(initialize_variables=False) that also forgets what it deferred.

    Keras keeps every deferred variable in a global list and allocates them all at the next
    StatelessScope exit anywhere (keras-hub's own loaders use one): planning a 7B model would
    then cost its 34 GB later in the run. There is no public API for that list, hence the
    private import; tests/test_model_files.py measures that planning stays small.
    """
    import keras
    from keras.src.backend.common import global_state

    before = list(global_state.get_global_attribute("uninitialized_variables") or [])
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        global_state.set_global_attribute("uninitialized_variables", before)


@contextlib.contextmanager
def stable_names():
    """Fresh counters for keras' automatic layer names while one model is built, the process's
    own put back after. Keras numbers unnamed layers per prefix across the whole process
    (keras-hub's Mixtral names its blocks mixtral_sparse_moe_block_<n>), so the model the plan
    builds and the one the run builds after it would otherwise have different variable paths,
    and the plan, the placement and the Hugging Face map (all by path) would not meet. There is
    no public API for the counters, hence the private import."""
    import collections

    from keras.src.backend.common import global_state

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)

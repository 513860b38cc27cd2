"""The exact map between a keras-hub backbone's variables and transformers' tensors, read off
keras-hub's own converters (keras_hub/src/utils/transformers/convert_*.py).

A converter calls `loader.port_weight(keras_variable, hf_weight_key, hook_fn)` for every weight,
where the hook reshapes and transposes the Hugging Face tensor into the Keras shape. Instead of
tensors we hand the hook an array of positions (0 .. n-1 in the Hugging Face tensor's shape); what
comes back says, for every Keras element, which Hugging Face element it is. That one map serves
both directions: import takes `hf.flat[index]`, export scatters `hf.flat[index] = keras`. It
is checked to be a permutation, so both directions are exact by construction.

Two upstream faults this avoids: convert_mistral's hooks cast every tensor to float16 (a
float32 or bfloat16 checkpoint loses precision and range), and keras-hub's exporters
(export/gemma.py) keep only the first key/value head of multi-head Gemma models.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from runner.backbones import backbone_class, no_memory_scope, stable_names
from runner.errors import UserError
from runner.hf.folder import converter
from runner.hf.shapes import tensor_shapes


class _Positions(np.ndarray):
    """Positions a hook may reshape and transpose; a cast (convert_mistral's float16) is
    ignored, because positions are not values and must stay exact."""

    def astype(self, dtype, *args, **kwargs):  # noqa: ARG002 - the cast is deliberately dropped
        return self


@dataclass(frozen=True)
class Port:
    path: str  # the Keras variable's path, e.g. decoder_block_0/attention/query/kernel
    hf_key: str  # the transformers state-dict key, e.g. model.layers.0.self_attn.q_proj.weight
    hf_shape: tuple
    index: np.ndarray  # Keras-shaped: the flat Hugging Face position of every element
    # None: the port covers the whole Keras variable. Else the flat Keras positions it covers,
    # `index` giving the Hugging Face position of each: one variable stacked from several
    # tensors (convert_mixtral stacks each layer's experts) has one port per tensor.
    keras_positions: Optional[np.ndarray] = None

    def to_keras(self, hf_tensor: np.ndarray) -> np.ndarray:
        assert self.keras_positions is None, "a part of a variable has no Keras shape"
        return np.asarray(hf_tensor).reshape(-1)[self.index]

    def to_hf(self, keras_value: np.ndarray) -> np.ndarray:
        values = np.asarray(keras_value).reshape(-1)
        if self.keras_positions is not None:
            values = values[self.keras_positions]
        out = np.empty(math.prod(self.hf_shape), dtype=values.dtype)
        out[self.index.reshape(-1)] = values
        return out.reshape(self.hf_shape)


def port(keras_variable, hf_key: str, hf_shape, hook_fn) -> Port:
    """The Port a converter's `port_weight(keras_variable, hf_key, hook_fn)` call describes."""
    shape = tuple(int(n) for n in hf_shape)
    positions = np.arange(math.prod(shape), dtype=np.int64).reshape(shape).view(_Positions)
    if hook_fn is not None:
        positions = hook_fn(positions, list(keras_variable.shape))
    index = np.asarray(positions, dtype=np.int64).reshape(tuple(keras_variable.shape))
    if not np.array_equal(np.sort(index, axis=None), np.arange(math.prod(shape))):
        raise RuntimeError(f"keras-hub's map of {hf_key} is not a permutation")
    return Port(keras_variable.path, hf_key, shape, index)


class _Recorder:
    """Stands in for keras-hub's SafetensorLoader and records a Port per port_weight call."""

    def __init__(self, hf_shapes: dict):
        self.hf_shapes = hf_shapes
        self.ports: list[Port] = []
        self._read: list[tuple] = []  # (first position, key, shape) read, not yet assigned
        self._next = 0

    def _full_key(self, key: str) -> str:
        """Some converters name tensors without their prefix (convert_qwen3: "embed_tokens.weight"
        for "model.embed_tokens.weight"); keras-hub's loader then takes the key that ends so."""
        if key in self.hf_shapes:
            return key
        matches = [k for k in self.hf_shapes if k.endswith("." + key)]
        if len(matches) != 1:
            raise UserError(f"transformers' model has no tensor {key} (runner/hf/shapes.py), "
                            "which keras-hub's converter maps; the config does not match")
        return matches[0]

    def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
        key = self._full_key(hf_weight_key)
        self.ports.append(port(keras_variable, key, self.hf_shapes[key], hook_fn))

    def get_tensor(self, hf_weight_key):
        """For converters that read tensors and assign a variable themselves: positions in one
        space shared by every tensor read, so the assigned array says which tensor and which
        element each Keras element is (see `assigned`)."""
        key = self._full_key(hf_weight_key)
        shape = tuple(int(n) for n in self.hf_shapes[key])
        first, self._next = self._next, self._next + math.prod(shape)
        self._read.append((first, key, shape))
        return (first + np.arange(math.prod(shape), dtype=np.int64)).reshape(shape) \
            .view(_Positions)

    def assigned(self, variable, value) -> None:
        """A converter's `variable.assign(array built from get_tensor's positions)`: one Port per
        tensor it holds, each checked to be a permutation, the variable covered exactly."""
        flat = np.asarray(value, dtype=np.int64).reshape(-1)
        if flat.size != math.prod(variable.shape):
            raise RuntimeError(f"keras-hub assigns {flat.size} values to {variable.path}")
        firsts = np.array([first for first, _, _ in self._read], dtype=np.int64)
        which = np.searchsorted(firsts, flat, side="right") - 1  # the read each element is of
        order = np.argsort(which, kind="stable")
        reads, starts = np.unique(which[order], return_index=True)
        for i, (read, start) in enumerate(zip(reads, starts)):
            first, key, shape = self._read[read]
            end = starts[i + 1] if i + 1 < len(starts) else flat.size
            where = order[start:end]  # Keras positions holding this tensor, in Keras order
            local = flat[where] - first
            if not np.array_equal(np.sort(local), np.arange(math.prod(shape))):
                raise RuntimeError(f"keras-hub's map of {key} into {variable.path} is not a "
                                   "permutation")
            self.ports.append(Port(variable.path, key, shape, local, keras_positions=where))
        used = set(int(r) for r in reads)  # reads stay until assigned (w1, w3, w2 are read
        self._read = [r for i, r in enumerate(self._read) if i not in used]  # together)


@contextlib.contextmanager
def _assignments_to(recorder: _Recorder, backbone):
    """Route `assign` of the backbone's variables to the recorder while a converter runs. The
    converter reaches the variables through the layers' own attributes and keras offers no hook
    on assign, so the variable classes' method is swapped for the call and put back after."""
    classes = {type(v) for v in backbone.variables}
    saved = {cls: cls.__dict__.get("assign") for cls in classes}

    def assign(variable, value):
        recorder.assigned(variable, value)
        return variable

    for cls in classes:
        cls.assign = assign
    try:
        yield
    finally:
        for cls, original in saved.items():
            if original is None:
                del cls.assign
            else:
                cls.assign = original


def record(converter, backbone, hf_config: dict, hf_shapes: dict) -> list[Port]:
    """Every Port of `backbone` (built with no LoRA, whose kernels are plain variables)."""
    recorder = _Recorder(hf_shapes)
    with _assignments_to(recorder, backbone):
        converter.convert_weights(backbone, recorder, hf_config)
    return recorder.ports


def converter_ports(family: str, numbers: dict, hf_config: dict) -> list[Port]:
    """keras-hub's converter map for this architecture, recorded on a backbone with no memory and
    no LoRA (the converters port `.kernel`, which LoRA turns into a computed value) against
    transformers' tensor shapes for `hf_config` (runner.hf.shapes: no torch needed)."""
    with no_memory_scope(), stable_names():
        blank = backbone_class(family)(**numbers, dtype="float32")
    return record(converter(family), blank, hf_config, tensor_shapes(hf_config))

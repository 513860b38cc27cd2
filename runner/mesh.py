"""Mesh config -> keras DeviceMesh, with the shape resolved and checked in one place."""

from __future__ import annotations

import math
from typing import Sequence

from runner.errors import UserError


def resolve_shape(shape: Sequence[int], n_devices: int) -> tuple[int, ...]:
    """Replace a single -1 with what is left of n_devices and check the product.

    >>> resolve_shape([-1, 4], 8)
    (2, 4)
    """
    shape = [int(s) for s in shape]
    if shape.count(-1) > 1:
        raise UserError(f"mesh.shape={shape}: at most one entry may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise UserError(f"mesh.shape={shape}: entries must be positive (or one -1)")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if n_devices % known:
            raise UserError(
                f"mesh.shape={shape}: {n_devices} devices do not divide by {known}; "
                f"choose sizes whose product divides {n_devices}")
        shape[shape.index(-1)] = n_devices // known
    if math.prod(shape) != n_devices:
        raise UserError(
            f"mesh.shape={shape} needs {math.prod(shape)} devices but {n_devices} are available; "
            f"use a shape whose product is {n_devices} (e.g. mesh=data_parallel), "
            f"or set cpu_devices={math.prod(shape)} on CPU")
    return tuple(shape)


def axis_sizes(mesh_cfg, n_devices: int) -> dict[str, int]:
    """{axis name: size} for the configured mesh over n_devices, checked."""
    shape = resolve_shape(mesh_cfg.shape, n_devices)
    names = list(mesh_cfg.axis_names)
    if len(names) != len(shape):
        raise UserError(
            f"mesh.axis_names={names} has {len(names)} names for a {len(shape)}-D mesh.shape; "
            "give one name per dimension")
    if len(set(names)) != len(names):
        raise UserError(f"mesh.axis_names={names}: names must be unique")
    for key in ("batch_axis", "model_axis"):
        if getattr(mesh_cfg, key) not in names:
            raise UserError(
                f"mesh.{key}={getattr(mesh_cfg, key)} is not one of mesh.axis_names={names}")
    return dict(zip(names, shape))


def build_mesh(mesh_cfg, devices=None):
    """A keras.distribution.DeviceMesh over `devices` (default: every device JAX sees)."""
    import keras

    devices = list(devices) if devices is not None else keras.distribution.list_devices()
    sizes = axis_sizes(mesh_cfg, len(devices))
    return keras.distribution.DeviceMesh(
        shape=tuple(sizes.values()), axis_names=list(sizes), devices=devices)

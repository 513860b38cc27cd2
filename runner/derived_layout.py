"""layout=derived: a sharding from the model's variables alone, for any keras-hub causal LM,
with no rule written by hand (keras-hub ships layout maps for a few backbones only, and closed
the series that would add the rest; keras-hub #2807).

For every weight with two or more dimensions and at least layout.min_split_elements elements:
- the hidden (residual) width is the dimension size that recurs most across the model's
  weights; every kernel reads or writes it;
- tensor parallelism: the model axis splits the first dimension that is not the hidden one
  (query/key/value/output kernels: the heads; feed-forward: the intermediate width; embeddings:
  the vocabulary; mixture-of-experts kernels: the experts), when its size divides the axis;
- fully sharded data parallelism (mesh.fsdp): the batch axis splits the hidden dimension, or
  else the largest other dimension it divides.
A dimension that does not divide its axis is left whole and the plan says so (a Gemma 3 270m's
single key/value head on a model axis of 4). One-dimensional weights (norm scales, biases) and
LoRA kernels (small by design) stay whole. Rules are written per layer pattern
(decoder_block_*/attention/key/kernel), so the plan's lines stay one per kind of variable.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Optional

from runner.layout import Rule
from runner.plan import layer_pattern

ORIGIN = "layout=derived"


def hidden_size(shapes: list[tuple]) -> Optional[int]:
    """The dimension size most weights share: the model's residual width (sizes of 1, the
    reduced axes of quantization scales, do not count)."""
    counts = Counter(n for shape in shapes if len(shape) >= 2 for n in set(shape) if n > 1)
    return counts.most_common(1)[0][0] if counts else None


def _axes_for(shape: tuple, hidden: Optional[int], model: tuple, batch: Optional[tuple],
              notes: list) -> tuple:
    """One variable's axes; `model`/`batch` are (axis name, size); notes gets why a split
    could not be made."""
    axes: list = [None] * len(shape)
    others = [d for d, n in enumerate(shape) if n != hidden]
    name, size = model
    if size > 1 and others:
        dim = others[0]
        if shape[dim] % size == 0:
            axes[dim] = name
        else:
            notes.append(f"dimension {dim} (size {shape[dim]}) does not divide mesh axis "
                         f"'{name}' ({size}): left whole along it")
    if batch is not None and batch[1] > 1:
        name, size = batch
        free = [d for d in range(len(shape)) if axes[d] is None and shape[d] % size == 0]
        hidden_dims = [d for d in free if shape[d] == hidden]
        choice = hidden_dims or sorted(free, key=lambda d: -shape[d])
        if choice:
            axes[choice[0]] = name
        else:
            notes.append(f"no free dimension divides mesh axis '{name}' ({size}): "
                         "left whole along it")
    return tuple(axes)


def derive(variables, axis_sizes: dict, model_axis: str, batch_axis: str, fsdp: bool,
           min_elements: int, hidden: Optional[int] = None) -> tuple[list[Rule], list[str]]:
    """(rules, notes) for these (stateless) variables: one rule per layer pattern whose
    variables are split, and one note per layer pattern left whole along an axis. `hidden`:
    the backbone's own hidden_dim where it states one (every keras-hub LM does), else the size
    most weights share."""
    weights = [v for v in variables if "lora_kernel" not in v.path]
    hidden = hidden or hidden_size([tuple(v.shape) for v in weights])
    model = (model_axis, axis_sizes.get(model_axis, 1))
    batch = (batch_axis, axis_sizes.get(batch_axis, 1)) if fsdp else None
    by_pattern: dict[str, tuple] = {}
    notes: dict[str, list] = {}
    for v in weights:
        shape = tuple(int(n) for n in v.shape)
        if len(shape) < 2 or math.prod(shape) < min_elements:
            continue
        pattern = layer_pattern(v.path)
        why: list = []
        axes = _axes_for(shape, hidden, model, batch, why)
        previous = by_pattern.setdefault(pattern, axes)
        if previous != axes:  # layers of one pattern with different shapes: per variable
            by_pattern[v.path] = axes
        if why:
            notes.setdefault(pattern, why)
    split = [(pattern, axes) for pattern, axes in by_pattern.items()
             if any(a is not None for a in axes)]
    rules = [Rule(name=f"derived_{i}", pattern=_regex(pattern), axes=axes, origin=ORIGIN,
                  adjustable=True) for i, (pattern, axes) in enumerate(split)]
    count = Counter(layer_pattern(v.path) for v in weights)
    lines = [f"{ORIGIN}: {p}{f' ({count[p]} variables)' if count[p] > 1 else ''} "
             + "; ".join(why) for p, why in notes.items()]
    return rules, lines


def _regex(pattern: str) -> str:
    """decoder_block_*/attention/query/kernel -> decoder_block_\\d+/attention/query/kernel."""
    return "\\d+".join(re.escape(part) for part in pattern.split("*"))

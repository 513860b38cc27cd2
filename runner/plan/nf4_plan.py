"""quant=nf4 and int4 in the plan: each 4-bit layer's stored variables (runner/nf4_layers.py) in
place of its float kernel, split as the layout splits that kernel.

The codes and block maxima are the kernel read as a transformers weight, (output axes) x
(contracted axes), each group merged into one dimension. A merged dimension splits over a mesh
axis exactly when the group's first (major) axis does, so the spec carries over: Gemma's query
(heads, hidden, head_dim) split (model, batch, None) stores codes (heads x head_dim,
hidden / 2) split (model, batch). The scale and offset (one float32 per 256 maxima, and one)
are whole on every device. Each float kernel exists for a moment while the model loads (read,
placed, quantized, dropped, one at a time: runner/nf4_loading.py), so the plan keeps their
placement as load rules.
"""

from __future__ import annotations

import dataclasses
import math

from runner import nf4_layers
from runner.layout import Rule
from runner.plan import Plan, _entry, _itemsize, layer_pattern


def _group_axis(spec, axes, axis_sizes):
    """(the mesh axis a merged group of kernel axes splits over: its first axis's, or None;
    whether a later axis of the group is split, which a merged dimension cannot express)."""
    split = [(i, spec[i]) for i in axes if spec[i] is not None and axis_sizes.get(spec[i], 1) > 1]
    if not split:
        return None, False
    if len(split) == 1 and split[0][0] == axes[0]:
        return split[0][1], False
    return None, True


def planned(the_plan: Plan, backbone, quant_cfg, axis_sizes: dict) -> Plan:
    """`the_plan` (of the float model) with the 4-bit variables of `backbone` (abstract, LoRA on)
    in place of the kernels they replace; `backbone` is quantized abstractly on the way."""
    mode = str(quant_cfg.mode)
    found = nf4_layers.problems(backbone, int(quant_cfg.block_size), mode)
    if found:
        return dataclasses.replace(the_plan, problems=the_plan.problems + found)
    by_path = {e.path: e for e in the_plan.entries}
    layers = nf4_layers.quantize(backbone, quant_cfg, abstract=True)
    replaced, load_rules, problems, notes = {}, [], [], []
    params = stored_bits = 0
    for layer in layers:
        kernel = by_path[f"{layer.path}/kernel"]
        order, outputs = layer.four_bit.view.order, layer.four_bit.view.outputs
        rows_axis, bad_rows = _group_axis(kernel.spec, order[:outputs], axis_sizes)
        columns_axis, bad_columns = _group_axis(kernel.spec, order[outputs:], axis_sizes)
        for bad, group in ((bad_rows, "output"), (bad_columns, "input")):
            if bad:
                problems.append(f"quant={mode}: {layer_pattern(kernel.path)} is split "
                                f"{kernel.spec}: an {group} axis after the first is split, and "
                                "its 4-bit codes (those axes merged) cannot be; split the "
                                "first, or use quant=int8")
        entries = []
        for variable in layer.weights:
            name = variable.path.rsplit("/", 1)[-1]
            if name not in nf4_layers.VARIABLES:
                continue
            spec = (rows_axis, columns_axis) if len(variable.shape) == 2 else \
                (None,) * len(variable.shape)
            spec = _fitted(spec, variable, name, columns_axis, axis_sizes, problems, notes)
            rule = Rule(name=kernel.rule, pattern=variable.path, axes=spec, origin="plan") \
                if any(spec) else None
            entry = _entry(variable.path, variable.shape, str(variable.dtype), "weight", False,
                           rule, axis_sizes)
            count = math.prod(kernel.shape) if name in nf4_layers.CODES else 0
            entries.append(dataclasses.replace(entry, params=count))
            stored_bits += math.prod(variable.shape) * _itemsize(str(variable.dtype)) * 8
        params += math.prod(kernel.shape)
        replaced[kernel.path] = entries
        if any(kernel.spec):
            load_rules.append(Rule(name=kernel.rule, pattern=kernel.path, axes=kernel.spec,
                                   origin="plan"))
    entries = [new for e in the_plan.entries for new in replaced.get(e.path, [e])]
    if params:
        if mode == "int4":
            stored = (f"Keras's int4 codes, a float32 scale and an int8 zero point per "
                      f"{quant_cfg.block_size} inputs")
        else:
            stored = (f"NF4 codes, block maxima"
                      f"{' in 8 bits, a float32 scale per 256' if quant_cfg.double_quant else ''}"
                      f"; blocks of {quant_cfg.block_size}")
        notes.append(f"quant={mode}: {len(layers)} linear layers' {params:,} parameters stored "
                     f"at {stored_bits / params:.3f} bits each ({stored}), dequantized to "
                     f"{quant_cfg.compute_dtype} in the step; the model loads one layer at a time "
                     "(each float kernel read, quantized and dropped before the next)")
    return dataclasses.replace(the_plan, entries=entries,
                               problems=the_plan.problems + _unique(problems),
                               notes=the_plan.notes + _unique(notes), load_rules=load_rules)


def _fitted(spec, variable, name, columns_axis, axis_sizes, problems, notes):
    """The codes must split as planned; block statistics that do not divide their axis stay
    whole on every device (they are 1/32 of the codes or less), with a note."""
    fitted = list(spec)
    for dim, axis in enumerate(spec):
        size = axis_sizes.get(axis, 1) if axis else 1
        if size > 1 and variable.shape[dim] % size:
            pattern = layer_pattern(variable.path)
            mode = name.split("_", 1)[0]  # nf4_codes -> nf4
            if name in nf4_layers.CODES:
                problems.append(f"quant={mode}: {pattern} has {variable.shape[dim]} codes on "
                                f"axis {dim}, which do not divide by mesh axis '{axis}' "
                                f"(size {size}); choose a mesh that divides it")
            else:
                notes.append(f"quant={mode}: {pattern} ({variable.shape[dim]} on axis {dim}) does "
                             f"not divide by mesh axis '{axis}' (size {size}): whole on every "
                             "device")
                fitted[dim] = None
    return tuple(fitted)


def _unique(lines):
    return list(dict.fromkeys(lines))


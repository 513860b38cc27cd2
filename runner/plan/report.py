"""The plan as text a person reads (a per-layer-pattern table, totals, problems) and as JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from runner.plan import Entry, Plan, layer_pattern, spec_str
from runner.plan.memory import GB, HEADROOM, DeviceMemory, Memory


@dataclass(frozen=True)
class Row:
    variable: str  # a path, or a layer pattern (decoder_block_*/...) standing for `count` paths
    count: int
    shape: tuple[int, ...]
    dtype: str
    spec: tuple
    rule: str
    bytes_per_device: int  # each

    @property
    def total_per_device(self) -> int:
        return self.count * self.bytes_per_device


def summary_rows(plan: Plan) -> list[Row]:
    """One row per layer pattern with the same shape, dtype, spec and rule, in plan order."""
    rows: dict[tuple, list] = {}
    for e in plan.entries:
        key = (layer_pattern(e.path), e.shape, e.dtype, e.spec, e.rule, e.bytes_per_device)
        rows.setdefault(key, [0])[0] += 1
    return [Row(variable=k[0], count=n, shape=k[1], dtype=k[2], spec=k[3], rule=k[4],
                bytes_per_device=k[5]) for k, (n,) in rows.items()]


def all_rows(plan: Plan) -> list[Row]:
    return [Row(e.path, 1, e.shape, e.dtype, e.spec, e.rule, e.bytes_per_device)
            for e in plan.entries]


def human_bytes(n: float) -> str:
    """Keras's units (1 KB = 1024 B), as model.summary() prints them."""
    for unit, size in (("GB", GB), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def variables_table(plan: Plan, show_all: bool) -> list[str]:
    if show_all:
        rows = [[r.variable, _shape(r.shape), r.dtype, spec_str(r.spec), r.rule,
                 human_bytes(r.bytes_per_device)] for r in all_rows(plan)]
        return _table(["variable", "shape", "dtype", "spec", "rule", "per device"], rows, {5})
    rows = [[r.variable, str(r.count), _shape(r.shape), r.dtype, spec_str(r.spec), r.rule,
             human_bytes(r.bytes_per_device), human_bytes(r.total_per_device)]
            for r in summary_rows(plan)]
    return _table(["variable (* = every layer)", "n", "shape", "dtype", "spec", "rule",
                   "per device", "n x per device"], rows, {1, 6, 7})


def render(plan: Plan, memory: Memory, device: DeviceMemory, header: list[str],
           activation_note: str, show_all: bool) -> str:
    total, trainable = plan.total_params, plan.trainable_params
    mesh = " x ".join(f"{name} {size}" for name, size in plan.axis_sizes.items())
    n_devices = math.prod(plan.axis_sizes.values())
    lines = header + [""]
    lines.append("Variables: weights, LoRA and optimizer slots" +
                 ("" if show_all else " (one row per layer pattern; --all lists every variable)"))
    lines += variables_table(plan, show_all)
    lines += ["", f"Parameters: {total:,} total, {trainable:,} trainable "
                  f"({100 * trainable / max(total, 1):.3g}%)",
              f"Per device ({n_devices} devices: {mesh}):"]
    parts = [("frozen weights", memory.frozen_weights, ""),
             ("trainable weights", memory.trainable_weights, ""),
             ("gradients", memory.gradients, "one per trainable weight"),
             ("optimizer state", memory.optimizer_state, ""),
             ("activations", memory.activations, activation_note),
             ("total", memory.total, "")]
    for label, nbytes, note in parts:
        lines.append(f"  {label:<18} {human_bytes(nbytes):>10}" + (f"   {note}" if note else ""))
    if device.bytes is None:
        lines.append(f"Device memory: {device.source}")
    else:
        used = memory.total / device.bytes
        verdict = "fits" if used <= 1 - HEADROOM else "DOES NOT FIT"
        lines.append(f"Device memory: {human_bytes(device.bytes)} ({device.source}): {verdict}, "
                     f"{100 * used:.1f}% used (fits means at most {100 - 100 * HEADROOM:.0f}%)")
    lines.append("")
    if plan.notes:
        lines.append("Layout notes (left whole where a dimension does not divide its axis):")
        lines += [f"  - {n}" for n in plan.notes]
    if plan.warnings:
        lines.append(f"Warnings ({len(plan.warnings)}): the run can start, but check these:")
        lines += [f"  - {w}" for w in plan.warnings]
    if plan.problems:
        lines.append(f"Problems ({len(plan.problems)}), each with its fix:")
        lines += [f"  - {p}" for p in plan.problems]
    elif not plan.warnings:
        lines.append("No problems found.")
    else:
        lines.append("No problems that stop the run; see the warnings above.")
    return "\n".join(lines)


def as_json(plan: Plan, memory: Memory, device: DeviceMemory, fits) -> dict:
    def entry(e: Entry) -> dict:
        d = asdict(e)
        d["shape"], d["spec"] = list(e.shape), list(e.spec)
        return d
    return {
        "axis_sizes": plan.axis_sizes,
        "total_params": plan.total_params,
        "trainable_params": plan.trainable_params,
        "memory_per_device": {**asdict(memory), "total": memory.total},
        "device_memory": asdict(device),
        "fits": fits,
        "problems": plan.problems,
        "warnings": plan.warnings,
        "layout_notes": plan.notes,
        "entries": [entry(e) for e in plan.entries],
    }


def render_compiled(compiled, memory: Memory) -> str:
    """XLA's memory per device for the compiled step beside the estimate."""
    peak = compiled.peak
    rows = [["arguments (weights, optimizer, batch)", human_bytes(compiled.arguments)],
            ["outputs (of which aliased into arguments)",
             f"{human_bytes(compiled.outputs)} ({human_bytes(compiled.aliased)})"],
            ["temporaries (gradients, activations, buffers)", human_bytes(compiled.temporaries)],
            ["peak = arguments + outputs - aliased + temporaries", human_bytes(peak)],
            ["estimate above", human_bytes(memory.total)],
            ["estimate / compiled", f"{memory.total / peak:.2f}" if peak else "-"]]
    lines = ["", f"Compiled train step, XLA memory analysis per device (lowered and compiled "
                 f"in {compiled.seconds:.1f} s, no weights built):"]
    return "\n".join(lines + _table(["", "bytes"], rows, {1}))

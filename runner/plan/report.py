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
           activation_note: str, show_all: bool, compiled=None) -> str:
    """compiled (runner.plan.compiled.CompiledMemory, from --compile): the verdict is its
    figure's, the estimate's beside it."""
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
        needed = memory.total if compiled is None else compiled.peak
        used = needed / device.bytes
        verdict = "fits" if used <= 1 - HEADROOM and not (compiled and compiled.refused) \
            else "DOES NOT FIT"
        by = "" if compiled is None else (
            f" by the compiled step's {'at least ' * bool(compiled.refused)}"
            f"{human_bytes(compiled.peak)} ({compiled.compiler}; the "
            f"estimate {human_bytes(memory.total)}"
            + (f", {memory.total / compiled.peak:.2f}x)" if compiled.peak else ")"))
        lines.append(f"Device memory: {human_bytes(device.bytes)} ({device.source}): {verdict}"
                     f"{by}, {100 * used:.1f}% used (fits means at most "
                     f"{100 - 100 * HEADROOM:.0f}%)")
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


def _seconds(s: float) -> str:
    return f"{s * 1e3:,.1f} ms" if s < 10 else f"{s:,.1f} s"


def render_prediction(prediction, accelerator: str, cost, loss_tiles: int = 1) -> list[str]:
    """The roofline step time on the planned accelerator (runner/plan/roofline.py)."""
    if prediction is None:
        return ["", "Predicted step time: set plan.accelerator (runner/plan/targets.py) for one."]
    flop = f"{cost.flops / 1e12:,.2f} TFLOP" if cost.flops >= 1e11 else \
        f"{cost.flops / 1e9:,.3f} GFLOP"
    rows = [["compute (FLOPs / peak)", flop,
             _seconds(prediction.compute_s)],
            ["memory (bytes accessed / bandwidth)", f"{cost.bytes_accessed / GB:,.2f} GB",
             _seconds(prediction.memory_s)],
            ["collectives (bytes sent / interconnect)",
             f"{cost.collective_bytes / GB:,.3f} GB", _seconds(prediction.collective_s)],
            ["step = max(compute, memory) + collectives", f"{prediction.bound}-bound",
             _seconds(prediction.step_s)]]
    lines = ["", f"Predicted step time on {accelerator}, per device (roofline of the compiled "
                 "step; runner/plan/roofline.py):"]
    lines += _table(["", "per device", "time"], rows, {1, 2})
    lines.append(f"  {prediction.tokens_per_s:,.0f} tokens/s, MFU "
                 f"{100 * prediction.mfu:.1f}% (model FLOPs / step time / peak of every device)"
                 + (f"; the TPU compiler's own estimate: {_seconds(cost.compiler_seconds)}"
                    if cost.compiler_seconds else ""))
    if loss_tiles > 1:
        lines.append(f"  Low by the loss's other {loss_tiles - 1} tiles: the compiler's cost "
                     "analysis counts a loop's body (one tile of the output layer) once.")
    return lines


def render_compiled(compiled, memory: Memory, prediction=None, accelerator=None,
                    loss_tiles: int = 1) -> str:
    """The compiler's memory per device for the compiled step beside the estimate, and the
    predicted step time."""
    peak = compiled.peak
    if compiled.refused:
        return "\n".join(["", f"Compiled train step: {compiled.compiler} refused it after "
                               f"{compiled.seconds:.1f} s, for lack of memory: "
                               f"{compiled.refused}",
                           (f"  It needs at least {human_bytes(peak)} per device" if peak else
                            "  It gave no size") + f"; the estimate above is "
                           f"{human_bytes(memory.total)}."])
    rows = [["arguments (weights, optimizer, batch)", human_bytes(compiled.arguments)],
            ["outputs (of which aliased into arguments)",
             f"{human_bytes(compiled.outputs)} ({human_bytes(compiled.aliased)})"],
            ["temporaries (gradients, activations, buffers)", human_bytes(compiled.temporaries)],
            ["generated code", human_bytes(compiled.generated_code)],
            ["peak = arguments + outputs - aliased + temporaries + code", human_bytes(peak)],
            ["estimate above", human_bytes(memory.total)],
            ["estimate / compiled", f"{memory.total / peak:.2f}" if peak else "-"]]
    lines = ["", f"Compiled train step, memory analysis per device by {compiled.compiler} "
                 f"(lowered and compiled in {compiled.seconds:.1f} s, no weights built):"]
    lines += _table(["", "bytes"], rows, {1})
    if compiled.caveat:
        lines.append(f"  Note: {compiled.caveat}")
    if compiled.cost is not None:
        lines += render_prediction(prediction, accelerator, compiled.cost, loss_tiles)
    return "\n".join(lines)

"""The sharding plan: every variable's shape, dtype, partition spec and bytes per device.

Made from variables built with no memory behind them (keras.StatelessScope with
initialize_variables=False; see runner.model.abstract_model), before any weight is loaded, and
checked for the mistakes that otherwise surface on the accelerator or never: a rule that matches
nothing (the variable is silently replicated), a variable matched by two rules, a spec whose rank
differs from the variable's (Keras pads it silently), an axis the mesh does not have, a dimension
not divisible by its mesh axis, a batch not divisible by the batch axis.

The same plan is the source of sharding.tsv and of the W&B sharding table, and of
`python -m runner.plan` (runner/plan/__main__.py). runner/plan/assemble.py makes a run's plan from
its config; memory.py adds bytes per device, report.py prints it, placement.py checks it against
where JAX put every variable.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from runner.errors import UserError
from runner.layout import Rule, matching_rules


@dataclass(frozen=True)
class Entry:
    path: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # weight | lora | optimizer | reference (full fine-tuning DPO's frozen copy)
    trainable: bool
    spec: tuple[Optional[str], ...]  # one mesh axis (or None) per dimension
    rule: str  # the rule that set the spec, "-" if none (replicated)
    bytes_per_device: int
    # the model parameters it stores, where that is not its element count (quant=nf4: the
    # codes hold a kernel's parameters two to a byte, its block statistics none)
    params: Optional[int] = None

    @property
    def parameters(self) -> int:
        return math.prod(self.shape) if self.params is None else self.params


@dataclass(frozen=True)
class Plan:
    entries: list[Entry]
    problems: list[str]
    axis_sizes: dict[str, int]
    dimensions: Optional[object] = None  # runner.plan.memory.Dimensions, for activation memory
    # What the layout left whole that it was meant to split (a single kv head on a model axis
    # of 4), one line per layer pattern: the run goes ahead.
    notes: list[str] = dataclasses.field(default_factory=list)
    # Variables left whole on every device at plan.large_replicated_mb or more: the run goes
    # ahead, but the memory is likely not what the user meant (an 8B Llama's 2 GB LM head).
    warnings: list[str] = dataclasses.field(default_factory=list)
    # Where variables that exist only while the model loads are placed (quant=nf4: the float
    # kernels the NF4 ones are made from, split as the plan splits those)
    load_rules: list = dataclasses.field(default_factory=list)

    @property
    def weights(self) -> list[Entry]:
        """The model's own variables (not the optimizer's, not a frozen reference copy)."""
        return [e for e in self.entries if e.kind not in ("optimizer", "reference")]

    @property
    def total_params(self) -> int:
        return sum(e.parameters for e in self.weights)

    @property
    def trainable_params(self) -> int:
        return sum(e.parameters for e in self.weights if e.trainable)

    def placement_rules(self) -> list[Rule]:
        """The plan's specs as exact-path rules for keras' LayoutMap, where an exact key wins
        over every pattern: variables are placed as planned by construction. Whole variables
        need no entry (keras replicates what no rule matches)."""
        return [Rule(name=e.rule, pattern=e.path, axes=e.spec, origin="plan")
                for e in self.entries if e.kind != "optimizer" and any(e.spec)] + \
            list(self.load_rules)

    def check(self) -> None:
        """Raise UserError naming the first problem (and how many more there are)."""
        if self.problems:
            more = len(self.problems) - 1
            suffix = f" (and {more} more problem{'s' * (more > 1)}; see `python -m runner.plan`)" \
                if more else ""
            raise UserError(self.problems[0] + suffix)


# The layer index in a variable path: decoder_block_12/attention/query/kernel, and in an optimizer
# slot's flattened name, adamw/decoder_block_12_attention_query_kernel_momentum. Only the first
# segment's number (after an optional optimizer prefix) is a layer index: ffw_gating_2 is a name.
_LAYER_INDEX = re.compile(r"^((?:[a-z0-9]+/)?[a-z_]*?_)\d+(?=[/_])")


def layer_pattern(path: str) -> str:
    """decoder_block_12/attention/query/kernel -> decoder_block_*/attention/query/kernel."""
    return _LAYER_INDEX.sub(r"\1*", path, count=1)


WHERE = "\x00where\x00"  # stands for the variable in a problem message; see _Problems


class _Problems:
    """Problems in first-seen order, one line per problem *per layer pattern*: a 46-layer model
    whose key kernels do not divide gets one line saying "(46 variables)", not 46 lines."""

    def __init__(self):
        self._seen: dict[tuple[str, str], list] = {}  # (message, pattern) -> [first path, count]

    def add(self, message: str, path: str = "") -> None:
        """`message` names the variable as WHERE; `path` is the variable it is about."""
        seen = self._seen.setdefault((message, layer_pattern(path)), [path, 0])
        seen[1] += 1

    def lines(self) -> list[str]:
        return [message.replace(WHERE, path if count == 1 else f"{pattern} ({count} variables)")
                for (message, pattern), (path, count) in self._seen.items()]


TSV_COLUMNS = ["path", "kind", "shape", "dtype", "spec", "bytes_per_device", "rule"]


def spec_str(spec: Sequence[Optional[str]]) -> str:
    return "(" + ", ".join("None" if a is None else a for a in spec) + ")"


def tsv_rows(plan: Plan) -> list[list[str]]:
    return [[e.path, e.kind, "x".join(map(str, e.shape)) or "scalar", e.dtype, spec_str(e.spec),
             str(e.bytes_per_device), e.rule] for e in plan.entries]


def write_tsv(plan: Plan, path) -> None:
    lines = ["\t".join(TSV_COLUMNS)] + ["\t".join(r) for r in tsv_rows(plan)]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _itemsize(dtype: str) -> int:
    import ml_dtypes  # noqa: F401  (registers bfloat16 etc. with numpy)
    import numpy as np

    return np.dtype(dtype).itemsize


def _unsplit_fix(rule: Rule, dim: int) -> str:
    """How to leave one dimension unsplit: edit the rule, or let the layout fit the mesh."""
    return (f"null for dimension {dim} in {rule.origin}.axes, or layout=auto (the family's own "
            "layout) or layout=derived, which leave such a dimension whole themselves")


def _fitted(rule: Optional[Rule], path: str, shape, axis_sizes, notes: _Problems
            ) -> Optional[Rule]:
    """An adjustable rule (layout=auto) with each axis that does not divide its dimension left
    out for this variable, noted; other rules as they are."""
    if rule is None or not rule.adjustable or len(rule.axes) != len(shape):
        return rule
    axes = list(rule.axes)
    for dim, (size, axis) in enumerate(zip(shape, rule.axes)):
        if axis in axis_sizes and size % axis_sizes[axis]:
            axes[dim] = None
            notes.add(f"{rule.origin}: {WHERE} dimension {dim} (size {size}) does not divide "
                      f"mesh axis '{axis}' ({axis_sizes[axis]}): left whole along it", path)
    return dataclasses.replace(rule, axes=tuple(axes)) if tuple(axes) != rule.axes else rule


def _large_replicated(entries: list[Entry], limit: int, weight_axes, warnings: _Problems
                      ) -> None:
    """A large variable whole on every device where the mesh has an axis that could split it
    (`weight_axes`: the model axis, and the batch axis unless mesh.fsdp=false). On a pure data
    parallel mesh every weight is whole by design: no warning."""
    if not weight_axes:
        return
    for e in entries:
        if e.kind != "optimizer" and not any(e.spec) and e.bytes_per_device >= limit:
            warnings.add(f"{WHERE} is whole on every device ({e.bytes_per_device / 2**20:,.0f} "
                         f"MB each) though mesh axes {sorted(weight_axes)} could split it: add a "
                         "layout rule that splits it, or use layout=derived "
                         "(plan.large_replicated_mb sets this warning's size)", e.path)


def _repeated_paths(variables, problems: _Problems) -> None:
    for path, count in collections.Counter(v.path for v in variables).items():
        if count > 1:
            problems.add(f"{WHERE} is the path of {count} variables of this model (keras-hub "
                         "names them alike), so no layout can place them apart and the plan "
                         "cannot tell them apart: this model cannot be sharded by path", path)


def _variable_problems(problems: _Problems, path, shape, rule: Optional[Rule], axis_sizes):
    if rule is None:
        return
    if len(rule.axes) != len(shape):
        problems.add(f"{rule.origin} gives {len(rule.axes)} axes {spec_str(rule.axes)} to "
                     f"{WHERE}, which has {len(shape)} dimensions {tuple(shape)}; give one axis "
                     f"(or null) per dimension in {rule.origin}.axes", path)
        return
    for dim, (size, axis) in enumerate(zip(shape, rule.axes)):
        if axis is None:
            continue
        if axis not in axis_sizes:
            problems.add(f"{rule.origin} names mesh axis '{axis}', which is not in "
                         f"mesh.axis_names={list(axis_sizes)}; use one of those or null")
        elif size % axis_sizes[axis]:
            problems.add(
                f"{WHERE} dimension {dim} (size {size}) does not divide by mesh axis '{axis}' "
                f"(size {axis_sizes[axis]}), set by {rule.origin}; use a mesh whose '{axis}' "
                f"axis divides {size}, or {_unsplit_fix(rule, dim)}", path)


def _entry(path, shape, dtype, kind, trainable, rule, axis_sizes) -> Entry:
    spec = tuple(rule.axes) if rule is not None and len(rule.axes) == len(shape) \
        else (None,) * len(shape)
    split = math.prod(axis_sizes.get(a, 1) for a in spec if a is not None)
    nbytes = math.prod(shape) * _itemsize(dtype)
    return Entry(path=path, shape=tuple(shape), dtype=dtype, kind=kind, trainable=trainable,
                 spec=spec, rule=rule.name if rule else "-", bytes_per_device=nbytes // split)


def _batch_problems(problems, batch_size: int, axis_sizes: dict, batch_axis: str,
                    micro_batches: int) -> None:
    """The batch, and each micro-batch of it, splits evenly over the batch axis."""
    n = axis_sizes.get(batch_axis, 1)
    if batch_size % n:
        problems.add(f"train.batch_size={batch_size} does not divide by the mesh's batch axis "
                     f"'{batch_axis}' (size {n}); use a multiple of {n}")
    elif micro_batches > 1 and (batch_size // micro_batches) % n:
        problems.add(
            f"train.batch_size={batch_size} in train.gradient_accumulation_steps="
            f"{micro_batches} micro-batches of {batch_size // micro_batches} does not divide "
            f"by the mesh's batch axis '{batch_axis}' (size {n}); use a batch of a multiple of "
            f"{n * micro_batches}")


def plan_variables(variables, optimizer_variables, rules: Sequence[Rule],
                   axis_sizes: dict[str, int], batch_size: Optional[int] = None,
                   batch_axis: Optional[str] = None, large_replicated_bytes: int = 64 * 2**20,
                   weight_axes: Sequence[str] = (), micro_batches: int = 1) -> Plan:
    """variables: the model's (stateless) variables; optimizer_variables: the optimizer's,
    built over the trainable ones. Optimizer slots take their reference variable's layout,
    as keras BaseOptimizer.add_variable_from_reference does."""
    problems, notes, warnings = _Problems(), _Problems(), _Problems()
    entries: list[Entry] = []
    used: set[str] = set()
    seen_patterns: dict[str, str] = {}
    for rule in rules:
        if rule.pattern in seen_patterns:
            problems.add(f"{rule.origin} repeats the pattern of {seen_patterns[rule.pattern]}; "
                         "merge them or remove one")
        seen_patterns.setdefault(rule.pattern, rule.origin)

    _repeated_paths(variables, problems)
    by_sanitized = {}
    for v in variables:
        hits = matching_rules(v.path, rules)
        if len(hits) > 1:
            problems.add(f"{WHERE} is matched by {len(hits)} rules "
                         f"({', '.join(r.origin for r in hits)}); make the patterns disjoint",
                         v.path)
        rule = _fitted(hits[0] if len(hits) == 1 else None, v.path, v.shape, axis_sizes, notes)
        used.update(r.name for r in hits)
        _variable_problems(problems, v.path, v.shape, rule, axis_sizes)
        kind = "lora" if "lora_kernel" in v.path else "weight"
        entry = _entry(v.path, v.shape, str(v.dtype), kind, bool(v.trainable), rule, axis_sizes)
        entries.append(entry)
        by_sanitized[v.path.replace("/", "_")] = (entry, rule)

    longest_first = sorted(by_sanitized, key=len, reverse=True)
    for v in optimizer_variables:
        # adamw/decoder_block_0_attention_query_lora_kernel_a_momentum -> its reference variable
        local = v.path.split("/", 1)[-1]
        ref = next((by_sanitized[k] for k in longest_first if local.startswith(k + "_")), None)
        rule = ref[1] if ref else None
        entries.append(_entry(v.path, v.shape, str(v.dtype), "optimizer", False, rule,
                              axis_sizes))

    repeated = {r.name for r in rules if seen_patterns[r.pattern] != r.origin}
    for rule in rules:
        if rule.name not in used and rule.name not in repeated and not rule.adjustable:
            problems.add(
                f"{rule.origin} (pattern {rule.pattern!r}) matches no variable of this model, so "
                "what it was meant to split stays replicated; fix the pattern (it must match the "
                "whole path, e.g. decoder_block_0/attention/query/kernel) or remove the rule")

    if batch_size is not None and batch_axis is not None:
        _batch_problems(problems, batch_size, axis_sizes, batch_axis, micro_batches)
    _large_replicated(entries, large_replicated_bytes, weight_axes, warnings)
    return Plan(entries=entries, problems=problems.lines(), axis_sizes=dict(axis_sizes),
                notes=notes.lines(), warnings=warnings.lines())

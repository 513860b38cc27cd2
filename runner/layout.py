"""Layout config -> named rules -> keras.distribution.LayoutMap.

A rule is (name, regex, axes). Keeping names (rather than a bare LayoutMap) is what lets the plan
say *which* rule matched nothing or split a dimension badly, and lets the command line change one
rule: `layout.rules.embedding.axes=[null,model]` or `~layout.rules.embedding`.

Matching follows keras.distribution.LayoutMap.__getitem__ exactly: an exact key wins, otherwise
every pattern is re.fullmatch'ed, and two matches is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from runner.errors import UserError


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: str
    axes: tuple[Optional[str], ...]
    origin: str  # where a user changes it, e.g. "layout.rules.embedding"


def auto_rules(backbone_cls, mesh_shape: dict[str, int], model_axis: str, batch_axis: str
               ) -> list[Rule]:
    """The family's own keras-hub layout map (e.g. GemmaBackbone.get_layout_map) as rules.

    keras-hub's helpers want a DeviceMesh only to read its axis names, so a mesh over placeholder
    device names works for any topology, including ones this machine does not have.
    """
    import keras

    helper = getattr(backbone_cls, "get_layout_map", None)
    if helper is None:
        return _rules_file_for(backbone_cls)
    n = 1
    for size in mesh_shape.values():
        n *= size
    mesh = keras.distribution.DeviceMesh(
        shape=tuple(mesh_shape.values()), axis_names=list(mesh_shape),
        devices=[f"placeholder:{i}" for i in range(n)])
    layout_map = helper(mesh, model_parallel_dim_name=model_axis,
                        data_parallel_dim_name=batch_axis)
    origin = f"layout=auto ({backbone_cls.__name__}.get_layout_map)"
    return [Rule(name=f"auto_{i}", pattern=key, axes=tuple(layout_map[key].axes), origin=origin)
            for i, key in enumerate(layout_map)]


def _rules_file_for(backbone_cls) -> list[Rule]:
    """layout=auto for a family keras-hub has no layout map for: the project's rule file."""
    from omegaconf import OmegaConf

    from runner.config import CONF_DIR
    from runner.families import by_backbone

    family = by_backbone(backbone_cls.__name__)
    name = family.auto_layout_file if family else None
    if name is None:
        raise UserError(
            f"layout=auto: keras-hub has no layout map for {backbone_cls.__name__}; "
            "use a rules file (conf/layout/) or write layout.rules")
    rules = OmegaConf.load(CONF_DIR / "layout" / f"{name}.yaml").rules
    return [Rule(name=key, pattern=r.pattern, axes=tuple(r.axes),
                 origin=f"layout=auto (rule {key} of conf/layout/{name}.yaml, as keras-hub has "
                        f"no layout map for {backbone_cls.__name__})")
            for key, r in rules.items()]


def configured_rules(layout_cfg, backbone_cls, mesh_shape: dict[str, int], mesh_cfg
                     ) -> list[Rule]:
    """The rules a run uses: the family's own (source=auto) or layout.rules (source=rules)."""
    if layout_cfg.source == "auto":
        if layout_cfg.rules:
            raise UserError(
                "layout.rules is set but layout.source=auto ignores it; use layout.source=rules "
                "(a rules file such as layout=gemma_model_parallel) to apply your own rules")
        return auto_rules(backbone_cls, mesh_shape, mesh_cfg.model_axis, mesh_cfg.batch_axis)
    return [parse_rule(name, rule) for name, rule in layout_cfg.rules.items()]


def rule_problem(name: str, rule) -> Optional[str]:
    """What is wrong with one `layout.rules.<name>` entry (exactly `pattern`, a regex, and
    `axes`, a list of mesh axis names or null), as a sentence starting with its name."""
    example = (f"e.g. layout.rules.{name}="
               "{pattern:'decoder_block.*ffw_linear.kernel',axes:[model,null]}")
    if not hasattr(rule, "keys") or set(rule.keys()) != {"pattern", "axes"}:
        got = sorted(rule.keys()) if hasattr(rule, "keys") else type(rule).__name__
        return f"{name} must have exactly the keys pattern and axes (got {got}); {example}"
    pattern, axes = rule["pattern"], rule["axes"]
    if not isinstance(pattern, str):
        return f"{name}.pattern must be a string regex, got {pattern!r}"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"{name}.pattern={pattern!r} is not a valid regex ({exc}); fix the pattern"
    if isinstance(axes, str) or not hasattr(axes, "__len__") or \
            not all(a is None or isinstance(a, str) for a in axes):
        return f"{name}.axes must be a list of mesh axis names or null, got {axes!r}"
    return None


def parse_rule(name: str, rule) -> Rule:
    """One checked `layout.rules.<name>` entry as a Rule."""
    problem = rule_problem(name, rule)
    if problem:
        raise UserError(f"layout.rules.{problem}")
    return Rule(name=name, pattern=rule["pattern"], axes=tuple(rule["axes"]),
                origin=f"layout.rules.{name}")


def matching_rules(path: str, rules: Sequence[Rule]) -> list[Rule]:
    """Rules that apply to `path`, as keras LayoutMap decides (exact key first, then fullmatch)."""
    exact = [r for r in rules if r.pattern == path]
    if exact:
        return exact[:1]
    return [r for r in rules if re.fullmatch(r.pattern, path)]


def build_layout_map(rules: Sequence[Rule], device_mesh):
    import keras

    layout_map = keras.distribution.LayoutMap(device_mesh)
    for rule in rules:
        layout_map[rule.pattern] = tuple(rule.axes)
    return layout_map


def distribution(mesh_cfg, rules: Sequence[Rule], devices):
    """keras ModelParallel over the configured mesh with these layout rules: create the model
    and the optimizer inside its scope(), so every variable is born with its layout."""
    import keras

    from runner.mesh import build_mesh

    return keras.distribution.ModelParallel(
        layout_map=build_layout_map(rules, build_mesh(mesh_cfg, devices)),
        batch_dim_name=mesh_cfg.batch_axis)

"""Layout config -> named rules -> keras.distribution.LayoutMap.

A rule is (name, regex, axes). Keeping names (rather than a bare LayoutMap) is what lets the plan
say *which* rule matched nothing or split a dimension badly, and lets the command line change one
rule: `layout.rules.embedding.axes=[null,model]` or `~layout.rules.embedding`.

Matching follows keras.distribution.LayoutMap.__getitem__ exactly: an exact key wins, otherwise
every pattern is re.fullmatch'ed, and two matches is an error.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from runner.conf_dir import CONF_DIR
from runner.errors import UserError
from runner.mesh import build_mesh


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: str
    axes: tuple[Optional[str], ...]
    origin: str  # where a user changes it, e.g. "layout.rules.embedding"
    # The family's own layout (layout=auto) and derived rules fit themselves to the mesh: a
    # dimension that does not divide its axis is left whole, and the plan says so. Rules a user
    # writes are used as written, and such a dimension is an error.
    adjustable: bool = False


def keras_hub_rules(backbone_cls, mesh_shape: dict[str, int], model_axis: str, batch_axis: str
                    ) -> list[Rule]:
    """The backbone's own keras-hub layout map (e.g. GemmaBackbone.get_layout_map) as rules.

    keras-hub's helpers want a DeviceMesh only to read its axis names, so a mesh over placeholder
    device names works for any topology, including ones this machine does not have.
    """
    import keras

    n = 1
    for size in mesh_shape.values():
        n *= size
    mesh = keras.distribution.DeviceMesh(
        shape=tuple(mesh_shape.values()), axis_names=list(mesh_shape),
        devices=[f"placeholder:{i}" for i in range(n)])
    layout_map = backbone_cls.get_layout_map(mesh, model_parallel_dim_name=model_axis,
                                             data_parallel_dim_name=batch_axis)
    origin = f"layout=auto ({backbone_cls.__name__}.get_layout_map)"
    return [Rule(name=f"auto_{i}", pattern=key, axes=tuple(layout_map[key].axes), origin=origin,
                 adjustable=True) for i, key in enumerate(layout_map)]


def file_rules(name: str, backbone_name: str) -> list[Rule]:
    """layout=auto for a family whose own layout is a rules file (conf/layout/<name>.yaml)."""
    from omegaconf import OmegaConf

    rules = OmegaConf.load(CONF_DIR / "layout" / f"{name}.yaml").rules
    return [Rule(name=key, pattern=r.pattern, axes=tuple(r.axes),
                 origin=f"layout=auto (rule {key} of conf/layout/{name}.yaml, as keras-hub has "
                        f"no layout map for {backbone_name})", adjustable=True)
            for key, r in rules.items()]


def without_axis(rules: Sequence[Rule], axis: str) -> list[Rule]:
    """The adjustable rules with `axis` taken out (mesh.fsdp=false: weights whole along the
    batch axis); rules a user wrote stay as written."""
    return [dataclasses.replace(r, axes=tuple(None if a == axis else a for a in r.axes))
            if r.adjustable else r for r in rules]


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

    return keras.distribution.ModelParallel(
        layout_map=build_layout_map(rules, build_mesh(mesh_cfg, devices)),
        batch_dim_name=mesh_cfg.batch_axis)

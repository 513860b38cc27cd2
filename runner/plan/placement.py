"""The plan is what sharding.tsv and W&B report: after the model and optimizer are built (and
after a checkpoint is restored), it must be what JAX actually did with every variable."""

from __future__ import annotations

from runner.plan import Plan


def actual_specs(variables) -> dict[str, tuple]:
    """path -> partition spec as JAX placed it, padded to the variable's rank."""
    specs = {}
    for v in variables:
        # one device: JAX places it with a SingleDeviceSharding, which has no spec
        spec = tuple(getattr(v.value.sharding, "spec", ()))
        specs[v.path] = spec + (None,) * (len(v.shape) - len(spec))
    return specs


def verify_placement(the_plan: Plan, variables) -> None:
    def split(spec):  # an axis of size 1 splits nothing: JAX may place it either way
        return tuple(a if the_plan.axis_sizes.get(a, 1) > 1 else None for a in spec)
    planned = {e.path: split(e.spec) for e in the_plan.entries}
    wrong = [f"{p}: planned {planned.get(p)}, placed {s}"
             for p, s in actual_specs(variables).items() if planned.get(p) != split(s)]
    if wrong:
        raise RuntimeError("sharding plan and placement disagree (a runner bug):\n"
                           + "\n".join(wrong[:10]))

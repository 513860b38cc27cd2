"""Mesh shape resolution and the sharding plan's checks, on plain data (no model needed)."""

from types import SimpleNamespace as NS

import pytest

from runner.errors import UserError
from runner.layout import Rule, matching_rules
from runner.mesh import axis_sizes, resolve_shape
from runner.plan import plan_variables as make_plan


def mesh_cfg(shape, names=("batch", "model")):
    return NS(shape=list(shape), axis_names=list(names), batch_axis="batch", model_axis="model")


@pytest.mark.parametrize("shape,n,expected", [([-1, 4], 8, (2, 4)), ([1, -1], 8, (1, 8)),
                                              ([2, 8], 16, (2, 8)), ([-1], 8, (8,))])
def test_resolve_shape(shape, n, expected):
    assert resolve_shape(shape, n) == expected


@pytest.mark.parametrize("shape,n,needle", [([3, 4], 8, "needs 12 devices but 8"),
                                            ([-1, -1], 8, "at most one entry may be -1"),
                                            ([-1, 3], 8, "do not divide by 3"),
                                            ([0, 8], 8, "must be positive")])
def test_resolve_shape_errors_name_the_key(shape, n, needle):
    with pytest.raises(UserError, match="mesh.shape") as info:
        resolve_shape(shape, n)
    assert needle in str(info.value)


def test_axis_names_must_fit_the_shape():
    with pytest.raises(UserError, match="mesh.axis_names"):
        axis_sizes(mesh_cfg([2, 4], ["batch"]), 8)


def var(path, shape, trainable=True, dtype="float32"):
    return NS(path=path, shape=shape, dtype=dtype, trainable=trainable)


def rule(name, pattern, axes):
    return Rule(name=name, pattern=pattern, axes=tuple(axes), origin=f"layout.rules.{name}")


SIZES = {"batch": 2, "model": 4}


def test_matching_follows_keras_fullmatch():
    rules = [rule("q", "block.*query.kernel", ["model", None])]
    assert matching_rules("block_0/query/kernel", rules)
    assert not matching_rules("block_0/query/lora_kernel_a", rules)  # fullmatch, not search
    assert not matching_rules("x/block_0/query/kernel/extra", rules)


def test_plan_specs_bytes_and_optimizer_slots():
    variables = [var("emb/embeddings", (512, 128)), var("norm/scale", (128,), trainable=False)]
    slots = [var("adamw/emb_embeddings_momentum", (512, 128)), var("adamw/iteration", ())]
    p = make_plan(variables, slots, [rule("emb", "emb/embeddings", ["model", "batch"])], SIZES)
    assert p.problems == []
    by = {e.path: e for e in p.entries}
    assert by["emb/embeddings"].spec == ("model", "batch")
    assert by["emb/embeddings"].bytes_per_device == 512 * 128 * 4 // 8
    assert by["norm/scale"].spec == (None,) and by["norm/scale"].rule == "-"
    assert by["adamw/emb_embeddings_momentum"].spec == ("model", "batch")  # follows its weight
    assert by["adamw/iteration"].spec == ()
    assert p.total_params == 512 * 128 + 128 and p.trainable_params == 512 * 128


@pytest.mark.parametrize("rules,needle", [
    ([rule("typo", "emb/embedding", ["model", None])], "layout.rules.typo (pattern 'emb/embedding') matches no variable"),
    ([rule("short", "emb/embeddings", ["model"])], "gives 1 axes (model) to emb/embeddings, which has 2 dimensions"),
    ([rule("odd", "k/kernel", ["model", None])], "k/kernel dimension 0 (size 1) does not divide by mesh axis 'model' (size 4)"),
    ([rule("axis", "emb/embeddings", ["tensor", None])], "names mesh axis 'tensor', which is not in mesh.axis_names"),
    ([rule("a", "emb/.*", [None, None]), rule("b", ".*/embeddings", [None, None])], "is matched by 2 rules"),
])
def test_plan_problems_name_the_rule_and_the_fix(rules, needle):
    variables = [var("emb/embeddings", (512, 128)), var("k/kernel", (1, 128))]
    p = make_plan(variables, [], rules, SIZES)
    assert any(needle in problem for problem in p.problems), p.problems
    with pytest.raises(UserError):
        p.check()


def test_batch_must_divide_the_batch_axis():
    p = make_plan([var("w", (4,))], [], [], SIZES, batch_size=7, batch_axis="batch")
    assert p.problems == ["train.batch_size=7 does not divide by the mesh's batch axis 'batch' "
                          "(size 2); use a multiple of 2"]


def test_variables_sharing_a_path_are_a_problem_and_adjustable_rules_fit_the_mesh():
    """keras-hub's SmolLM3 gives every layer's o_proj kernel one path: nothing path-based can
    place them apart. An adjustable rule (layout=auto) leaves a dimension that does not divide
    whole and notes it; the same rule written by a user is a problem."""
    import dataclasses

    twice = make_plan([var("o_proj/kernel", (4, 8)), var("o_proj/kernel", (4, 8))], [], [],
                      SIZES)
    assert any("o_proj/kernel is the path of 2 variables" in p for p in twice.problems)
    written = rule("kv", "k/kernel", ["model", "batch"])
    fitted = make_plan([var("k/kernel", (1, 128))], [],
                       [dataclasses.replace(written, adjustable=True)], SIZES)
    assert fitted.problems == [] and fitted.entries[0].spec == (None, "batch")
    assert "left whole along it" in fitted.notes[0]
    assert make_plan([var("k/kernel", (1, 128))], [], [written], SIZES).problems

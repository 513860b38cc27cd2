"""Optimizers and schedules by name: the learning rate applied at each step, and the optimizer
group's impossible combinations found before anything is built."""

import pytest


def test_warmup_cosine_schedule():
    from types import SimpleNamespace as NS

    from runner.optim import learning_rate_at

    c = NS(schedule="warmup_cosine", learning_rate=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate_at(c, 0, 100) == 0.0
    assert learning_rate_at(c, 5, 100) == pytest.approx(5e-4)
    assert learning_rate_at(c, 10, 100) == pytest.approx(1e-3)
    assert learning_rate_at(c, 55, 100) == pytest.approx(1e-4 + 0.5 * 9e-4, rel=1e-4)
    assert learning_rate_at(c, 100, 100) == pytest.approx(1e-4)


def test_warmup_ratio_is_a_share_of_the_runs_steps_rounded_up():
    """transformers' warmup_ratio: ceil(steps x ratio) steps of warmup."""
    from types import SimpleNamespace as NS

    from runner.optim import learning_rate_at, warmup_steps

    c = NS(schedule="warmup_cosine", learning_rate=1e-3, warmup_steps=0, warmup_ratio=0.1,
           min_lr_ratio=0.0)
    assert warmup_steps(c, 95) == 10  # 9.5 rounded up
    assert learning_rate_at(c, 5, 95) == pytest.approx(5e-4)
    assert learning_rate_at(c, 10, 95) == pytest.approx(1e-3)


@pytest.mark.parametrize("values,needle", [
    (dict(schedule="constant", warmup_ratio=0.1), "warmup_ratio needs optimizer.schedule"),
    (dict(schedule="warmup_cosine", warmup_steps=5, warmup_ratio=0.1), "keep one"),
    (dict(clipnorm=1.0, global_clipnorm=1.0), "both set"),
    (dict(name="sgd", weight_decay=0.01), "not applied by sgd"),
    (dict(schedule="constant", warmup_steps=10), "needs optimizer.schedule=warmup_cosine"),
])
def test_impossible_optimizer_groups_are_refused(values, needle):
    from types import SimpleNamespace as NS

    from runner.errors import UserError
    from runner.optim import check

    cfg = NS(**{**dict(name="adamw", clipnorm=None, global_clipnorm=None, weight_decay=0.0,
                       schedule="constant", warmup_steps=0, warmup_ratio=None), **values})
    with pytest.raises(UserError, match=needle):
        check(cfg)

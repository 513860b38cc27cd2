"""Optimizer config -> a Keras optimizer, chosen by name from a closed table."""

from __future__ import annotations

from runner.errors import UserError


def check(optimizer_cfg) -> None:
    """What the optimizer group cannot mean, found before anything is built."""
    if optimizer_cfg.clipnorm and optimizer_cfg.global_clipnorm:
        raise UserError("optimizer.clipnorm and optimizer.global_clipnorm are both set; "
                        "Keras applies only one: keep one of them")
    if optimizer_cfg.name == "sgd" and optimizer_cfg.weight_decay:
        raise UserError("optimizer.weight_decay is not applied by sgd; set it to 0 or use "
                        "optimizer=adamw")
    ratio = getattr(optimizer_cfg, "warmup_ratio", None)
    if optimizer_cfg.schedule == "constant" and (optimizer_cfg.warmup_steps or ratio):
        raise UserError(f"optimizer.warmup_{'ratio' if ratio else 'steps'} needs "
                        "optimizer.schedule=warmup_cosine")
    if ratio and optimizer_cfg.warmup_steps:
        raise UserError("optimizer.warmup_steps and optimizer.warmup_ratio are both set; keep one "
                        "(warmup_ratio: a share of the run's steps, as transformers' warmup_ratio)")


def build_optimizer(optimizer_cfg, total_steps: int = 1):
    """Create inside the distribution's scope, so slot variables get their weights' layouts.
    total_steps: the run's length, over which a schedule decays."""
    import keras

    check(optimizer_cfg)
    name = str(optimizer_cfg.name)
    # An explicit name keeps variable paths (adamw/...) the same in the plan and the run.
    common = dict(learning_rate=learning_rate(optimizer_cfg, total_steps),
                  clipnorm=optimizer_cfg.clipnorm, global_clipnorm=optimizer_cfg.global_clipnorm,
                  name=name)
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(
            weight_decay=optimizer_cfg.weight_decay, beta_1=optimizer_cfg.beta_1,
            beta_2=optimizer_cfg.beta_2, epsilon=optimizer_cfg.epsilon, **common)
        if optimizer_cfg.exclude_from_weight_decay:
            # Matched against variable names: "bias" and "scale" (norm layers) keep no decay.
            optimizer.exclude_from_weight_decay(
                var_names=list(optimizer_cfg.exclude_from_weight_decay))
        return optimizer
    if name == "sgd":
        return keras.optimizers.SGD(momentum=optimizer_cfg.momentum, **common)
    raise UserError(f"optimizer.name={name} is unknown; valid: adamw, sgd")


def learning_rate(optimizer_cfg, total_steps: int = 1):
    """The learning rate the optimizer is given: a float, or a schedule of the step."""
    import keras

    schedule = str(optimizer_cfg.schedule)
    peak = float(optimizer_cfg.learning_rate)
    if schedule == "constant":
        return peak
    if schedule == "warmup_cosine":
        warmup = warmup_steps(optimizer_cfg, total_steps)
        if warmup >= total_steps and total_steps > 1:
            raise UserError(f"optimizer.warmup_steps={warmup} is not below the run's "
                            f"{total_steps} steps; use fewer warmup steps")
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else peak,
            decay_steps=max(1, total_steps - warmup), alpha=optimizer_cfg.min_lr_ratio,
            warmup_target=peak if warmup else None, warmup_steps=warmup)
    raise UserError(f"optimizer.schedule={schedule} is unknown; valid: constant, warmup_cosine")


def warmup_steps(optimizer_cfg, total_steps: int) -> int:
    """optimizer.warmup_steps, or warmup_ratio of the run's steps rounded up (transformers'
    get_warmup_steps: ceil(total x ratio))."""
    import math

    ratio = getattr(optimizer_cfg, "warmup_ratio", None)
    if ratio:
        return math.ceil(total_steps * float(ratio))
    return int(optimizer_cfg.warmup_steps)


def learning_rate_at(optimizer_cfg, step: int, total_steps: int = 1) -> float:
    """The learning rate applied at `step` (0-based). Computed from the config, because the
    optimizer's own variable is not readable while a JAX fit holds the training state."""
    import keras

    lr = learning_rate(optimizer_cfg, total_steps)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(lr(step))
    return lr

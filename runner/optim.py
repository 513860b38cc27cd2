"""Optimizer config -> a Keras optimizer, chosen by name from a closed table."""

from __future__ import annotations

from runner.errors import UserError


def build_optimizer(optimizer_cfg):
    """Create inside the distribution's scope, so slot variables get their weights' layouts."""
    import keras

    name = getattr(optimizer_cfg.name, "value", optimizer_cfg.name)
    # An explicit name keeps variable paths (adamw/...) the same in the plan and the run.
    common = dict(learning_rate=learning_rate(optimizer_cfg), clipnorm=optimizer_cfg.clipnorm,
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
        if optimizer_cfg.weight_decay:
            raise UserError("optimizer.weight_decay is not applied by sgd; set it to 0 or use "
                            "optimizer=adamw")
        return keras.optimizers.SGD(momentum=optimizer_cfg.momentum, **common)
    raise UserError(f"optimizer.name={name} is unknown; valid: adamw, sgd")


def learning_rate(optimizer_cfg):
    """The learning rate the optimizer is given: a float, or a schedule of the step."""
    return float(optimizer_cfg.learning_rate)


def learning_rate_at(optimizer_cfg, step: int) -> float:
    """The learning rate applied at `step` (0-based). Computed from the config, because the
    optimizer's own variable is not readable while a JAX fit holds the training state."""
    import keras

    lr = learning_rate(optimizer_cfg)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(lr(step))
    return lr

"""The preference objectives (objective=dpo|orpo|simpo) inside the runner's step (runner/step.py).

A batch of P pairs arrives as 2P rows, pair i at rows 2i (chosen) and 2i + 1 (rejected)
(runner/preference_data.py), so chosen and rejected go through the model in one forward pass,
as TRL's concatenated forward does. The output layer runs tile by tile once
(runner.token_loss.row_logps), giving each row's log-probability summed over its answer
tokens, and over all its real target tokens (ORPO's NLL, as TRL's ORPOTrainer takes it).

DPO's reference: the same backbone with every LoRA adapter switched off (the frozen base
weights exist once), or for a full fine-tune its frozen copy (runner/reference_model.py); its
forward pass runs in the same compiled step, under stop_gradient, in inference mode, and keeps
nothing for the backward pass. (Precomputing the reference once
per dataset, as TRL's precompute_ref_log_probs does, would save that forward pass per step;
not done yet.)
"""

from __future__ import annotations

import contextlib

from runner import reference_model
from runner.backbone_pass import backbone_pass
from runner.preference_loss import Preference, preference_loss

# The metrics a preference step reports (TRL's names), and ORPO's own.
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected")
ORPO_METRICS = ("nll_loss", "log_odds_ratio", "log_odds_chosen")


def metric_names(objective: Preference) -> tuple:
    return METRICS + (ORPO_METRICS if objective.name == "orpo" else ())


def of_config(objective_cfg):
    """objective config -> Preference, or None for sft."""
    if objective_cfg is None or str(objective_cfg.name) == "sft":
        return None
    return Preference(str(objective_cfg.name), float(objective_cfg.beta),
                      str(objective_cfg.loss_type), float(objective_cfg.label_smoothing),
                      float(objective_cfg.gamma))


@contextlib.contextmanager
def adapters_off(backbone):
    """Every LoRA-enabled layer of `backbone` computes its frozen kernel alone (Keras's layers
    and runner.factored_lora read `lora_enabled` in their call) while the context is open."""
    layers = [layer for layer in backbone._flatten_layers(include_self=False)
              if getattr(layer, "lora_enabled", False)]
    for layer in layers:
        layer.lora_enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.lora_enabled = True


def _target_mask(x, y, pad_id: int):
    """1 where the target is a real token (the next input position is not padding)."""
    import jax.numpy as jnp

    mask = x["padding_mask"].astype(bool)
    last = jnp.logical_and(mask[:, -1:], y[:, -1:] != pad_id)  # a row filling every position
    return jnp.concatenate([mask[:, 1:], last], axis=1).astype(jnp.float32)


def _logps(lm, trainable, non_trainable, x, y, w, every, tiles, training, backbone=None):
    """(per-row log-probabilities (rows, 2) over the answer tokens `w` and over every real
    target token `every`, per-row hits, extra, updated non-trainable values) from one forward
    pass (of `backbone`, the model's own when None)."""
    import jax.numpy as jnp

    from runner.token_loss import row_logps

    hidden, extra, updated, head, head_values, head_trainable = backbone_pass(
        lm, trainable, non_trainable, x, training, backbone)
    weights = jnp.stack([w.astype(jnp.float32), every], axis=-1)
    logps, hits = row_logps(head, head_values, head_trainable, hidden, y, weights, tiles)
    return logps, hits, extra, updated


def _reference_logps(lm, trainable, non_trainable, x, y, w, every, tiles):
    """The reference's answer log-probabilities per row, no gradient: a full fine-tune's frozen
    copy (runner/reference_model.py), or under LoRA the base with the adapters off."""
    import jax

    frozen = [jax.lax.stop_gradient(v) for v in trainable]
    frozen_rest = [jax.lax.stop_gradient(v) for v in non_trainable]
    copy = reference_model.of(lm)
    with adapters_off(lm.backbone) if copy is None else contextlib.nullcontext():
        logps, _, _, _ = _logps(lm, frozen, frozen_rest, x, y, w, every, tiles, False, copy)
    return jax.lax.stop_gradient(logps[:, 0])


def loss_and_sums(lm, objective: Preference, trainable, non_trainable, x, y, w, tiles: int,
                  training: bool, total_pairs: int, pad_id: int):
    """(this batch's share of the step's loss, (token sums, metric sums), extra, updated
    non-trainable values). The share: the batch's mean loss x its pairs / the step's pairs, so
    micro-batches (train.gradient_accumulation_steps) add up to the whole batch's mean (ORPO's
    NLL is then a mean per micro-batch). Metric sums: each metric x pairs, and "pairs"."""
    import jax.numpy as jnp

    every = _target_mask(x, y, pad_id)
    logps, hits, extra, updated = _logps(lm, trainable, non_trainable, x, y, w, every, tiles,
                                         training)
    tokens = jnp.sum(w.astype(jnp.float32), axis=1)  # answer tokens per row
    answer = logps[:, 0]
    chosen, rejected = answer[0::2], answer[1::2]
    reference = {}
    if objective.name == "dpo":
        ref = _reference_logps(lm, trainable, non_trainable, x, y, w, every, tiles)
        reference = {"ref_chosen_logps": ref[0::2], "ref_rejected_logps": ref[1::2]}
    nll = None
    if objective.name == "orpo":  # TRL: the mean over every real target token of the chosen
        nll = -jnp.sum(logps[0::2, 1]) / jnp.maximum(jnp.sum(every[0::2]), 1.0)
    loss, metrics = preference_loss(objective, chosen, rejected, tokens[0::2], tokens[1::2],
                                    chosen_nll=nll, **reference)
    pairs = chosen.shape[0]
    sums = {name: value * pairs for name, value in metrics.items()}
    sums["loss"] = loss * pairs
    sums["pairs"] = jnp.asarray(pairs, jnp.float32)
    token_sums = (-jnp.sum(answer), jnp.sum(tokens), jnp.sum(hits[:, 0]))
    return loss * pairs / total_pairs, (token_sums, sums), extra, updated

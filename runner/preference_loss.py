"""Preference objectives from per-sequence log-probabilities: DPO (sigmoid, its conservative
form cDPO by label smoothing, IPO, hinge), ORPO and SimPO, with the metrics under TRL's names.

The formulas are TRL 1.16's, the reference implementation most papers use:
trl/trainer/dpo_trainer.py (`DPOTrainer._compute_loss`: sigmoid, ipo over token-averaged
log-ratios, hinge, rewards = beta x the detached log-ratio), trl/experimental/orpo
(`odds_ratio_loss`), trl/experimental/cpo (`cpo_loss` with loss_type="simpo"). cDPO is the
label-smoothed sigmoid of the DPO paper's follow-up (TRL <= 0.28's `dpo_loss`; in 1.16 still in
`cpo_loss`, which DPO 1.16 dropped for "sigmoid"). tests/test_preference_loss.py checks every
objective against TRL's own functions. Written here, not imported, because TRL computes in
PyTorch and the runner's step is JAX.

Inputs are per pair (batch,) arrays: a sequence's log-probability is the sum over its response
tokens only (`sequence_logps`), with the token count beside it for the objectives that average
(IPO, ORPO, SimPO). The reference log-probabilities (DPO only) are the same sums under the
reference model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jax
import jax.numpy as jnp

OBJECTIVES = ("dpo", "orpo", "simpo")
DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


@dataclass(frozen=True)
class Preference:
    """One objective and its hyperparameters."""
    name: str  # dpo | orpo | simpo
    beta: float  # DPO's and SimPO's beta; ORPO's lambda (TRL calls it beta too)
    loss_type: str = "sigmoid"  # DPO only: sigmoid | ipo | hinge
    label_smoothing: float = 0.0  # DPO sigmoid (cDPO) and SimPO: the share of flipped labels
    gamma: float = 0.0  # SimPO's target reward margin (TRL's simpo_gamma)


def sequence_logps(logits, labels, mask):
    """(sum of log p(label) over the positions where mask is 1, how many), per row, float32.
    logits (batch, length, vocabulary) predict labels (batch, length) at the same position."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    mask = mask.astype(jnp.float32)
    return jnp.sum(picked * mask, axis=-1), jnp.sum(mask, axis=-1)


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, accurate on both sides of -ln 2 (as TRL's ORPO computes it)."""
    return jnp.where(x < -0.6931471805599453, jnp.log1p(-jnp.exp(x)), jnp.log(-jnp.expm1(x)))


def _smoothed_sigmoid(x, label_smoothing: float):
    """-log sigmoid(x), with `label_smoothing` of the pairs taken as flipped."""
    return (-(1 - label_smoothing) * jax.nn.log_sigmoid(x)
            - label_smoothing * jax.nn.log_sigmoid(-x))


@dataclass(frozen=True)
class _Terms:
    loss: object  # scalar
    chosen_rewards: object  # (pairs,)
    rejected_rewards: object
    chosen_logps: object  # what logps/chosen shows: sums (DPO) or averages (ORPO, SimPO)
    rejected_logps: object
    extra: dict


def _dpo(objective: Preference, chosen, rejected, n_chosen, n_rejected, ref_chosen,
         ref_rejected) -> _Terms:
    if ref_chosen is None or ref_rejected is None:
        raise ValueError("DPO needs the reference model's log-probabilities")
    beta = objective.beta
    chosen_ratio = chosen - ref_chosen.astype(jnp.float32)
    rejected_ratio = rejected - ref_rejected.astype(jnp.float32)
    if objective.loss_type == "sigmoid":
        losses = _smoothed_sigmoid(beta * (chosen_ratio - rejected_ratio),
                                   objective.label_smoothing)
    elif objective.loss_type == "ipo":  # on log-ratios averaged over the response tokens
        losses = (chosen_ratio / n_chosen - rejected_ratio / n_rejected - 1 / (2 * beta)) ** 2
    elif objective.loss_type == "hinge":
        losses = jax.nn.relu(1 - beta * (chosen_ratio - rejected_ratio))
    else:
        raise ValueError(f"DPO loss_type {objective.loss_type!r}: one of {DPO_LOSS_TYPES}")
    return _Terms(jnp.mean(losses), beta * chosen_ratio, beta * rejected_ratio, chosen,
                  rejected, {})


def _reference_free(objective: Preference, chosen, rejected, n_chosen, n_rejected,
                    chosen_nll) -> _Terms:
    """ORPO and SimPO: on log-probabilities averaged over the response tokens, no reference."""
    beta = objective.beta
    chosen_avg, rejected_avg = chosen / n_chosen, rejected / n_rejected
    extra = {}
    if objective.name == "orpo":
        if chosen_nll is None:
            raise ValueError("ORPO needs the chosen responses' negative log-likelihood")
        log_odds = (chosen_avg - rejected_avg) - (_log1mexp(chosen_avg)
                                                  - _log1mexp(rejected_avg))
        ratio = jax.nn.log_sigmoid(log_odds)
        nll = jnp.asarray(chosen_nll, jnp.float32)
        loss = nll - beta * jnp.mean(ratio)
        # TRL's names, whose meanings look swapped: log_odds_ratio is the mean log-sigmoid
        extra = {"nll_loss": nll, "log_odds_ratio": jnp.mean(ratio),
                 "log_odds_chosen": jnp.mean(log_odds)}
    else:
        margin = chosen_avg - rejected_avg - objective.gamma / beta
        loss = jnp.mean(_smoothed_sigmoid(beta * margin, objective.label_smoothing))
    return _Terms(loss, beta * chosen_avg, beta * rejected_avg, chosen_avg, rejected_avg, extra)


def preference_loss(objective: Preference, chosen_logps, rejected_logps, chosen_tokens,
                    rejected_tokens, ref_chosen_logps=None, ref_rejected_logps=None,
                    chosen_nll: Optional[object] = None):
    """(loss, metrics): the batch's mean loss and TRL's metrics, each a float32 scalar (a mean
    over the pairs). `chosen_nll` (ORPO): the mean negative log-likelihood of the chosen
    responses' tokens, which ORPO adds to the odds-ratio term."""
    chosen = jnp.asarray(chosen_logps, jnp.float32)
    rejected = jnp.asarray(rejected_logps, jnp.float32)
    n_chosen = jnp.maximum(jnp.asarray(chosen_tokens, jnp.float32), 1.0)
    n_rejected = jnp.maximum(jnp.asarray(rejected_tokens, jnp.float32), 1.0)
    if objective.name == "dpo":
        terms = _dpo(objective, chosen, rejected, n_chosen, n_rejected,
                     None if ref_chosen_logps is None else jnp.asarray(ref_chosen_logps),
                     None if ref_rejected_logps is None else jnp.asarray(ref_rejected_logps))
    elif objective.name in ("orpo", "simpo"):
        terms = _reference_free(objective, chosen, rejected, n_chosen, n_rejected, chosen_nll)
    else:
        raise ValueError(f"objective {objective.name!r}: one of {OBJECTIVES}")
    won = jax.lax.stop_gradient(terms.chosen_rewards)
    lost = jax.lax.stop_gradient(terms.rejected_rewards)
    metrics = {
        "rewards/chosen": jnp.mean(won),
        "rewards/rejected": jnp.mean(lost),
        # a tie is not a win (TRL: chosen > rejected, strictly)
        "rewards/accuracies": jnp.mean((won > lost).astype(jnp.float32)),
        "rewards/margins": jnp.mean(won - lost),
        "logps/chosen": jnp.mean(jax.lax.stop_gradient(terms.chosen_logps)),
        "logps/rejected": jnp.mean(jax.lax.stop_gradient(terms.rejected_logps)),
        **{k: jax.lax.stop_gradient(v) for k, v in terms.extra.items()},
    }
    return terms.loss, metrics

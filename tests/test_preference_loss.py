"""runner/preference_loss.py against TRL's own functions (the reference implementation): the
same log-probabilities in, the same loss and metrics out, to 1e-4 in float32, for DPO (sigmoid,
cDPO, IPO, hinge), ORPO and SimPO; and the per-sequence log-probabilities against TRL's."""

import functools
import os
import types

import numpy as np
import pytest
import torch

from runner.preference_loss import Preference, preference_loss, sequence_logps

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental warns on import
from trl.experimental import cpo as trl_cpo, orpo as trl_orpo  # noqa: E402

PAIRS = 16
RNG = np.random.default_rng(0)
# Summed response log-probabilities of a policy and a reference that differ, token counts
# between 1 and 40 (a one-token response must work), and a tie in the first pair.
TOKENS_C = RNG.integers(1, 40, PAIRS).astype(np.float32)
TOKENS_R = RNG.integers(1, 40, PAIRS).astype(np.float32)
CHOSEN = (-RNG.uniform(0.2, 3.0, PAIRS) * TOKENS_C).astype(np.float32)
REJECTED = (-RNG.uniform(0.2, 3.0, PAIRS) * TOKENS_R).astype(np.float32)
REF_C = (CHOSEN + RNG.normal(0, 2, PAIRS)).astype(np.float32)
REF_R = (REJECTED + RNG.normal(0, 2, PAIRS)).astype(np.float32)
REF_C[0], REF_R[0] = CHOSEN[0], REJECTED[0]  # rewards 0 and 0: not a win
NLL = np.float32(1.2345)
SHARED = ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"]


def _stub(**fields):
    """What TRL's loss methods read from `self`, without building a trainer (no model, no hub)."""
    acc = types.SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x)
    return types.SimpleNamespace(accelerator=acc, aux_loss_enabled=False, **fields)


def _trl_cpo(chosen, rejected, nll=0.0, **fields):
    """CPOTrainer.get_batch_loss_metrics over given (B,) log-probabilities: (loss, metrics)."""
    stub = _stub(alpha=0.0, cpo_alpha=0.0, **fields)
    logits = torch.zeros(PAIRS, 2, 3)
    stub.concatenated_forward = lambda model, batch: (torch.tensor(chosen), torch.tensor(rejected),
                                                      logits, logits, torch.tensor(nll))
    stub.cpo_loss = functools.partial(trl_cpo.CPOTrainer.cpo_loss, stub)
    loss, metrics = trl_cpo.CPOTrainer.get_batch_loss_metrics(stub, None, {}, "train")
    return float(loss), metrics


def _runner(objective, **extra):
    loss, metrics = preference_loss(objective, CHOSEN, REJECTED, TOKENS_C, TOKENS_R, **extra)
    return float(loss), {k: float(v) for k, v in metrics.items()}


def _close(ours: dict, theirs: dict, names):
    for name in names:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-4, rel=1e-4), name


@pytest.mark.parametrize("loss_type, label_smoothing", [
    ("sigmoid", 0.0), ("sigmoid", 0.1), ("hinge", 0.0), ("ipo", 0.0)])
def test_dpo_matches_trl(loss_type, label_smoothing):
    """DPO's losses are functions of the policy-minus-reference log-ratios (IPO: averaged over
    the response tokens), which TRL's CPO loss takes in place of log-probabilities: the same
    formulas, the label-smoothed sigmoid (cDPO) included, which TRL 1.16's DPO no longer has."""
    beta = 0.1
    ratio_c, ratio_r = CHOSEN - REF_C, REJECTED - REF_R
    if loss_type == "ipo":
        ratio_c, ratio_r = ratio_c / TOKENS_C, ratio_r / TOKENS_R
    trl_loss, trl_metrics = _trl_cpo(ratio_c, ratio_r, beta=beta, loss_type=loss_type,
                                     label_smoothing=label_smoothing, simpo_gamma=0.0)
    loss, metrics = _runner(Preference("dpo", beta, loss_type, label_smoothing),
                            ref_chosen_logps=REF_C, ref_rejected_logps=REF_R)
    assert loss == pytest.approx(trl_loss, abs=1e-4, rel=1e-4)
    if loss_type != "ipo":  # TRL's rewards are beta x its inputs: for IPO, averaged ratios
        _close(metrics, trl_metrics, SHARED)
    assert metrics["logps/chosen"] == pytest.approx(float(np.mean(CHOSEN)), rel=1e-5)
    assert metrics["logps/rejected"] == pytest.approx(float(np.mean(REJECTED)), rel=1e-5)
    assert metrics["rewards/accuracies"] == pytest.approx(
        float(np.mean(ratio_c * beta > ratio_r * beta)) if loss_type != "ipo" else
        float(np.mean(CHOSEN - REF_C > REJECTED - REF_R)))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_simpo_matches_trl(label_smoothing):
    """SimPO (TRL's CPO with loss_type=simpo, cpo_alpha=0): length-averaged log-probabilities,
    the paper's beta 2.0 and gamma 0.5 x beta."""
    beta, gamma = 2.0, 1.0
    trl_loss, trl_metrics = _trl_cpo(CHOSEN / TOKENS_C, REJECTED / TOKENS_R, beta=beta,
                                     loss_type="simpo", label_smoothing=label_smoothing,
                                     simpo_gamma=gamma)
    loss, metrics = _runner(Preference("simpo", beta, label_smoothing=label_smoothing,
                                       gamma=gamma))
    assert loss == pytest.approx(trl_loss, abs=1e-4, rel=1e-4)
    _close(metrics, trl_metrics, SHARED + ["logps/chosen", "logps/rejected"])


def test_orpo_matches_trl():
    """ORPO: the chosen responses' NLL minus lambda x the mean log-sigmoid of the log odds
    ratio of the length-averaged log-probabilities; TRL's metric names, swapped meanings kept."""
    stub = _stub(beta=0.1)
    logits = torch.zeros(PAIRS, 2, 3)
    stub.concatenated_forward = lambda model, batch: (
        torch.tensor(CHOSEN / TOKENS_C), torch.tensor(REJECTED / TOKENS_R), logits, logits,
        torch.tensor(NLL))
    stub.odds_ratio_loss = functools.partial(trl_orpo.ORPOTrainer.odds_ratio_loss, stub)
    trl_loss, trl_metrics = trl_orpo.ORPOTrainer.get_batch_loss_metrics(stub, None, {}, "train")
    loss, metrics = _runner(Preference("orpo", 0.1), chosen_nll=NLL)
    assert loss == pytest.approx(float(trl_loss), abs=1e-4, rel=1e-4)
    _close(metrics, trl_metrics, SHARED + ["logps/chosen", "logps/rejected", "nll_loss",
                                           "log_odds_ratio", "log_odds_chosen"])


def test_sequence_log_probabilities_match_trl():
    """The sum over response tokens only, and its average, as TRL's get_batch_logps (which
    shifts itself: logits at t predict the token at t + 1; -100 marks prompt and padding)."""
    logits = RNG.normal(0, 3, (4, 9, 11)).astype(np.float32)
    tokens = RNG.integers(0, 11, (4, 9))
    labels = np.where(np.arange(9)[None, :] < np.array([[2], [3], [5], [1]]), -100, tokens)
    labels[1, 7:] = -100  # right padding
    trl_sum = trl_orpo.ORPOTrainer.get_batch_logps(torch.tensor(logits), torch.tensor(labels))
    trl_avg = trl_orpo.ORPOTrainer.get_batch_logps(torch.tensor(logits), torch.tensor(labels),
                                                   average_log_prob=True)
    mask = labels[:, 1:] != -100
    sums, counts = sequence_logps(logits[:, :-1], np.where(mask, labels[:, 1:], 0), mask)
    np.testing.assert_allclose(np.asarray(sums), trl_sum.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(sums) / np.asarray(counts), trl_avg.numpy(),
                               rtol=1e-5, atol=1e-5)


def test_what_an_objective_needs_is_asked_for():
    with pytest.raises(ValueError, match="reference"):
        preference_loss(Preference("dpo", 0.1), CHOSEN, REJECTED, TOKENS_C, TOKENS_R)
    with pytest.raises(ValueError, match="negative log-likelihood"):
        preference_loss(Preference("orpo", 0.1), CHOSEN, REJECTED, TOKENS_C, TOKENS_R)
    with pytest.raises(ValueError, match="loss_type"):
        preference_loss(Preference("dpo", 0.1, "kto"), CHOSEN, REJECTED, TOKENS_C, TOKENS_R,
                        ref_chosen_logps=REF_C, ref_rejected_logps=REF_R)


@pytest.mark.parametrize("objective", [Preference("dpo", 0.1, label_smoothing=0.1),
                                       Preference("simpo", 2.0, gamma=1.0),
                                       Preference("orpo", 0.1)])
def test_gradients_match_trls_autograd(objective):
    """What trains is the gradient: d loss / d policy log-probabilities by jax.grad, against
    torch autograd through TRL's loss (the rewards carry none, in both)."""
    import jax

    avg = objective.name != "dpo"
    chosen_t = torch.tensor(CHOSEN, requires_grad=True)
    rejected_t = torch.tensor(REJECTED, requires_grad=True)
    c, r = chosen_t / torch.tensor(TOKENS_C), rejected_t / torch.tensor(TOKENS_R)
    if objective.name == "orpo":
        stub = _stub(beta=objective.beta)
        losses = trl_orpo.ORPOTrainer.odds_ratio_loss(stub, c, r)[0]
        (torch.tensor(NLL) - losses.mean()).backward()
    else:
        stub = _stub(beta=objective.beta, loss_type="simpo" if avg else "sigmoid",
                     label_smoothing=objective.label_smoothing, simpo_gamma=objective.gamma,
                     alpha=0.0)
        if avg:
            losses = trl_cpo.CPOTrainer.cpo_loss(stub, c, r)[0]
        else:
            losses = trl_cpo.CPOTrainer.cpo_loss(stub, chosen_t - torch.tensor(REF_C),
                                                 rejected_t - torch.tensor(REF_R))[0]
        losses.mean().backward()

    def loss(chosen, rejected):
        return preference_loss(objective, chosen, rejected, TOKENS_C, TOKENS_R,
                               ref_chosen_logps=REF_C, ref_rejected_logps=REF_R,
                               chosen_nll=NLL)[0]
    d_chosen, d_rejected = jax.grad(loss, argnums=(0, 1))(CHOSEN, REJECTED)
    np.testing.assert_allclose(np.asarray(d_chosen), chosen_t.grad.numpy(), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(d_rejected), rejected_t.grad.numpy(), rtol=1e-4,
                               atol=1e-6)
    assert np.abs(np.asarray(d_chosen)).sum() > 0

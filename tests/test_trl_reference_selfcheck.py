"""tests/trl_reference.py (TRL 1.16's own DPO / ORPO / SimPO trainers run on given ids) against a
straightforward torch computation: per-sequence response log-probs of prompt+response from
log_softmax, and the textbook formulas. Proves the helper feeds TRL exactly the response tokens
(and, for ORPO's NLL, the prompt+chosen tokens after BOS), so it can serve as the reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from trl_reference import trl_preference_metrics

TOL = 1e-5
BOS, EOS = 1, 2


def _save_llama(folder, seed):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, bos_token_id=BOS,
                         eos_token_id=EOS, dtype="float32")
    LlamaForCausalLM(config).float().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl-reference")
    policy, reference = _save_llama(root / "policy", 0), _save_llama(root / "reference", 1)
    g = torch.Generator().manual_seed(123)

    def ids(n):
        return torch.randint(3, 64, (n,), generator=g).tolist()

    # unequal lengths (padding in TRL's batch), a one-token response (EOS only)
    pairs = [([BOS] + ids(lp - 1), ids(lc - 1) + [EOS], ids(lr - 1) + [EOS])
             for lp, lc, lr in [(4, 3, 6), (7, 5, 1), (2, 8, 4)]]
    return policy, reference, pairs, _token_logps(policy, pairs), _token_logps(reference, pairs)


def _token_logps(folder, pairs):
    """Per pair, per (chosen, rejected): log p(x_t | x_<t) for t = 1 .. len(prompt+response)-1."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for prompt, chosen, rejected in pairs:
            per = []
            for resp in (chosen, rejected):
                ids = torch.tensor([prompt + resp])
                logp = F.log_softmax(model(ids).logits[0, :-1].double(), -1)
                per.append(logp.gather(1, ids[0, 1:, None])[:, 0])
            out.append(per)
    return out


def _resp(tok, pair, k):  # the response tokens' log-probs of side k (0 chosen, 1 rejected)
    return tok[-len(pair[1 + k]):]


def _mean(xs):
    return sum(xs) / len(xs)


def _ls(x):
    return F.logsigmoid(torch.tensor(x, dtype=torch.float64)).item()


def _close(trl, mine):
    for key, value in mine.items():
        assert trl[key] == pytest.approx(value, abs=TOL), key


def test_dpo_sigmoid_sums_response_tokens(setup):
    policy, reference, pairs, P, R = setup
    beta = 0.1
    trl = trl_preference_metrics("dpo", policy, pairs, reference_dir=reference, beta=beta)
    pc, pr, rc, rr = ([_resp(s[k], p, k).sum().item() for s, p in zip(S, pairs)]
                      for S, k in ((P, 0), (P, 1), (R, 0), (R, 1)))
    chosen = [beta * (a - b) for a, b in zip(pc, rc)]
    rejected = [beta * (a - b) for a, b in zip(pr, rr)]
    _close(trl, {
        "loss": _mean([-_ls(c - r) for c, r in zip(chosen, rejected)]),
        "rewards/chosen": _mean(chosen), "rewards/rejected": _mean(rejected),
        "rewards/accuracies": _mean([float(c > r) for c, r in zip(chosen, rejected)]),
        "rewards/margins": _mean([c - r for c, r in zip(chosen, rejected)]),
        "logps/chosen": _mean(pc), "logps/rejected": _mean(pr)})


def _averages(P, pairs):
    return ([_resp(s[0], p, 0).mean().item() for s, p in zip(P, pairs)],
            [_resp(s[1], p, 1).mean().item() for s, p in zip(P, pairs)])


def test_simpo_averages_response_tokens(setup):
    policy, _, pairs, P, _ = setup
    beta, gamma = 2.0, 0.3
    trl = trl_preference_metrics("simpo", policy, pairs, beta=beta, gamma=gamma)
    ac, ar = _averages(P, pairs)
    _close(trl, {
        "loss": _mean([-_ls(beta * (a - b) - gamma) for a, b in zip(ac, ar)]),
        "rewards/chosen": beta * _mean(ac), "rewards/rejected": beta * _mean(ar),
        "rewards/accuracies": _mean([float(a > b) for a, b in zip(ac, ar)]),
        "rewards/margins": beta * (_mean(ac) - _mean(ar)),
        "logps/chosen": _mean(ac), "logps/rejected": _mean(ar)})


def test_orpo_nll_covers_prompt_and_chosen(setup):
    policy, _, pairs, P, _ = setup
    beta = 0.1
    trl = trl_preference_metrics("orpo", policy, pairs, beta=beta)
    ac, ar = _averages(P, pairs)
    log_odds = [(a - b) - (math.log1p(-math.exp(a)) - math.log1p(-math.exp(b)))
                for a, b in zip(ac, ar)]
    nll = -torch.cat([s[0] for s in P]).mean().item()  # chosen prompt+response after BOS, pooled
    response_nll = -torch.cat([_resp(s[0], p, 0) for s, p in zip(P, pairs)]).mean().item()
    assert abs(nll - response_nll) > 10 * TOL  # the two readings are told apart
    _close(trl, {
        "nll_loss": nll, "loss": nll - beta * _mean([_ls(x) for x in log_odds]),
        "log_odds_ratio": _mean([_ls(x) for x in log_odds]), "log_odds_chosen": _mean(log_odds),
        "rewards/chosen": beta * _mean(ac), "rewards/rejected": beta * _mean(ar),
        "rewards/accuracies": _mean([float(a > b) for a, b in zip(ac, ar)]),
        "rewards/margins": beta * (_mean(ac) - _mean(ar)),
        "logps/chosen": _mean(ac), "logps/rejected": _mean(ar)})

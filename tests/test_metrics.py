"""Token metrics computed inside the compiled step: padding and prompt tokens excluded, the
latest step's loss and token count, and the mean over every token since the last reset."""

import pytest


def test_token_metrics_ignore_padding():
    import numpy as np

    from runner.metrics import TokenMetrics, flat

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype("float32")
    labels = rng.integers(0, 7, size=(2, 5))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype="float32")
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    masked = (nll * mask).sum() / mask.sum()
    metric = TokenMetrics()
    metric.update_state(labels, logits, mask)
    first = {k: float(v) for k, v in flat({"m": metric.result()}).items()}
    assert first["token_loss"] == pytest.approx(masked, rel=1e-5)
    assert first["tokens"] == 7
    assert first["step_loss_sum"] == pytest.approx((nll * mask).sum(), rel=1e-5)
    hit = (logits.argmax(-1) == labels).astype("float32")
    assert first["correct"] == (hit * mask).sum()
    metric.update_state(labels, logits, np.ones_like(mask))  # token_loss/tokens: latest step only
    second = {k: float(v) for k, v in metric.result().items()}
    assert second["token_loss"] == pytest.approx(nll.mean(), rel=1e-5)
    assert second["tokens"] == 10 and second["correct"] == hit.sum()
    # ...mean_token_loss, mean_accuracy: every token since the reset, each once (7 + 10 tokens)
    assert second["mean_token_loss"] == pytest.approx(
        ((nll * mask).sum() + nll.sum()) / 17, rel=1e-5)
    assert second["mean_accuracy"] == pytest.approx(((hit * mask).sum() + hit.sum()) / 17)

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


def test_the_step_logger_says_where_it_is_between_records_when_steps_are_slow(caplog):
    """log_every=100: between records, a progress line at least every PROGRESS_S seconds (0
    here: every step), and none of them reaches metrics.jsonl."""
    import logging

    from omegaconf import OmegaConf

    from runner import callbacks

    logged = []

    class Tracker:
        def log(self, record, step, timing=None):
            logged.append(step)

    logger = callbacks.StepLogger(Tracker(), OmegaConf.create({"learning_rate": 1e-3,
                                                               "schedule": "constant"}),
                                  log_every=100, total_steps=300)
    step_logs = {"step_loss_sum": 2.0, "tokens": 4.0, "correct": 1.0, "token_loss": 0.5}
    previous, callbacks.PROGRESS_S = callbacks.PROGRESS_S, 0.0
    try:
        with caplog.at_level(logging.INFO, logger="runner.callbacks"):
            logger.on_train_begin()
            for batch in range(3):
                logger.on_train_batch_end(batch, step_logs)
    finally:
        callbacks.PROGRESS_S = previous
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("step 1 done") and "compiling the step included" in lines[0]
    assert [ln.split("  ")[0] for ln in lines[1:]] == ["step 2/300", "step 3/300"]
    assert all("next record at step 100" in ln for ln in lines[1:])
    assert logged == [] and logger.interval["tokens"] == 12.0

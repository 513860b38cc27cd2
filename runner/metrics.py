"""Token-level metrics of a step, computed inside the compiled train step.

Keras reports `loss` as a running mean over the epoch, and its default reduction averages over
padding. This metric gives what a loss curve, a tokens/s figure and an honest eval loss need,
over real (non-zero sample weight) tokens only.
"""

from __future__ import annotations

import keras
from keras import ops

NAME = "token_metrics"


class TokenMetrics(keras.metrics.Metric):
    """One cross-entropy pass, three figures (result() is a dict; Keras flattens it into logs):
    - token_loss: the latest step's loss, averaged over its real tokens;
    - tokens: the latest step's real target tokens;
    - mean_token_loss: averaged over every real token since the last reset (over a whole
      evaluation, the token-level eval loss).

    One metric rather than three: XLA merges neither separate metrics' cross-entropies nor their
    cross-device sums, so three metrics cost three passes over batch x length x vocabulary and
    extra collectives in every step (benchmarks/run.py compares the compiled steps).
    """

    def __init__(self, name=NAME, **kwargs):
        super().__init__(name=name, **kwargs)
        zeros = dict(shape=(), initializer="zeros")
        self.step_total = self.add_variable(name="step_total", **zeros)
        self.step_count = self.add_variable(name="step_count", **zeros)
        self.total = self.add_variable(name="total", **zeros)
        self.count = self.add_variable(name="count", **zeros)

    def update_state(self, y_true, y_pred, sample_weight=None):
        ce = ops.sparse_categorical_crossentropy(y_true, ops.cast(y_pred, "float32"),
                                                 from_logits=True)
        w = ops.ones_like(ce) if sample_weight is None else ops.cast(sample_weight, ce.dtype)
        step_total, step_count = ops.sum(ce * w), ops.sum(w)
        self.step_total.assign(step_total)  # assign, not add: this step only
        self.step_count.assign(step_count)
        self.total.assign_add(step_total)
        self.count.assign_add(step_count)

    def result(self):
        return {"token_loss": self.step_total / ops.maximum(self.step_count, 1.0),
                "tokens": ops.convert_to_tensor(self.step_count),  # jit cannot return a Variable
                "mean_token_loss": self.total / ops.maximum(self.count, 1.0)}


def flat(logs: dict) -> dict:
    """Keras nests a dict result under the metric's name where it is not already flattened
    (evaluate's return value); callbacks get it flat."""
    out = {}
    for key, value in logs.items():
        out.update(flat(value) if isinstance(value, dict) else {key: value})
    return out

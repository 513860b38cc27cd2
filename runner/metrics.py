"""Token-level metrics of a step, computed inside the compiled train step.

Keras reports `loss` as a running mean over the epoch, and its default reduction averages over
padding. This metric gives what a loss curve, a tokens/s figure and an honest eval loss need,
over real (non-zero sample weight) tokens only; runner.callbacks.StepLogger turns the per-step
sums into each log interval's token-weighted means.
"""

from __future__ import annotations

import keras
from keras import ops

NAME = "token_metrics"


class TokenMetrics(keras.metrics.Metric):
    """One pass over the logits, every figure a run reports (result() is a dict; Keras flattens
    it into logs), over real target tokens only:
    - step_loss_sum, tokens, correct: the latest step's summed cross-entropy, its real target
      tokens, and how many of them the argmax predicts (the host sums them per log interval);
    - token_loss: the latest step's mean loss (step_loss_sum / tokens);
    - mean_token_loss, mean_accuracy: over every real token since the last reset (over a whole
      evaluation: the eval loss and accuracy).

    One metric rather than several: XLA merges neither separate metrics' passes over batch x
    length x vocabulary nor their cross-device sums, so each metric costs a pass and extra
    collectives in every step (benchmarks/run.py compares the compiled steps).
    """

    def __init__(self, name=NAME, **kwargs):
        super().__init__(name=name, **kwargs)
        zeros = dict(shape=(), initializer="zeros")
        self.step_total = self.add_variable(name="step_total", **zeros)
        self.step_count = self.add_variable(name="step_count", **zeros)
        self.step_correct = self.add_variable(name="step_correct", **zeros)
        self.total = self.add_variable(name="total", **zeros)
        self.count = self.add_variable(name="count", **zeros)
        self.correct = self.add_variable(name="correct", **zeros)

    def update_state(self, y_true, y_pred, sample_weight=None):
        logits = ops.cast(y_pred, "float32")
        ce = ops.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        w = ops.ones_like(ce) if sample_weight is None else ops.cast(sample_weight, ce.dtype)
        hit = ops.cast(ops.equal(ops.argmax(logits, axis=-1), ops.cast(y_true, "int32")),
                       ce.dtype)
        self.update_from_sums(ops.sum(ce * w), ops.sum(w), ops.sum(hit * w))

    def update_from_sums(self, step_total, step_count, step_correct):
        """The step's summed loss, real tokens and hits, computed elsewhere (runner.step: in
        the loss's own pass over the logits)."""
        self.step_total.assign(step_total)  # assign, not add: this step only
        self.step_count.assign(step_count)
        self.step_correct.assign(step_correct)
        self.total.assign_add(step_total)
        self.count.assign_add(step_count)
        self.correct.assign_add(step_correct)

    def result(self):
        count = ops.maximum(self.count, 1.0)
        # jit cannot return a Variable: convert_to_tensor
        return {"token_loss": self.step_total / ops.maximum(self.step_count, 1.0),
                "step_loss_sum": ops.convert_to_tensor(self.step_total),
                "tokens": ops.convert_to_tensor(self.step_count),
                "correct": ops.convert_to_tensor(self.step_correct),
                "mean_token_loss": self.total / count,
                "mean_accuracy": self.correct / count}


PAIRS = "pairs"
STEP, MEAN = "step_sum:", "mean:"  # prefixes of PreferenceMetrics' results


class PreferenceMetrics(keras.metrics.Metric):
    """A preference objective's metrics (TRL's names: runner/preference_step.py METRICS), from
    the step's per-pair sums: for each, the latest step's sum over its pairs (`step_sum:NAME`,
    summed by the host per log interval like TokenMetrics' sums) and the mean over every pair
    since the last reset (`mean:NAME`: a whole evaluation's figure); `pairs`: the step's."""

    def __init__(self, names=(), name="preference_metrics", **kwargs):
        super().__init__(name=name, **kwargs)
        self.names = tuple(names)
        zeros = dict(shape=(), initializer="zeros")
        keys = (PAIRS,) + self.names
        self.step = {k: self.add_variable(name=f"step_{i}", **zeros) for i, k in enumerate(keys)}
        self.total = {k: self.add_variable(name=f"total_{i}", **zeros) for i, k in enumerate(keys)}

    def update_state(self, *args, **kwargs):
        """Only the runner's step updates it (update_from_sums); Keras's own calls add nothing."""

    def update_from_sums(self, sums: dict):
        for key, variable in self.step.items():
            variable.assign(sums[key])
            self.total[key].assign_add(sums[key])

    def result(self):
        pairs = ops.maximum(self.total[PAIRS], 1.0)
        out = {PAIRS: ops.convert_to_tensor(self.step[PAIRS])}
        for key in self.names:
            out[STEP + key] = ops.convert_to_tensor(self.step[key])
            out[MEAN + key] = self.total[key] / pairs
        return out

    def get_config(self):
        return {**super().get_config(), "names": list(self.names)}


def flat(logs: dict) -> dict:
    """Keras nests a dict result under the metric's name where it is not already flattened
    (evaluate's return value); callbacks get it flat."""
    out = {}
    for key, value in logs.items():
        out.update(flat(value) if isinstance(value, dict) else {key: value})
    return out

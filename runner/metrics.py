"""Per-step token-level metrics, computed inside the compiled train step.

Keras reports `loss` as a running mean over the epoch, and its default reduction averages over
padding. These metrics hold only the latest step's values, over real (unpadded) tokens: exactly
what a loss curve and a tokens/s figure need.
"""

from __future__ import annotations

import keras
from keras import ops


class StepTokenLoss(keras.metrics.Metric):
    """Cross-entropy of the latest step, averaged over tokens with non-zero sample weight."""

    def __init__(self, name="token_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        ce = ops.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        w = ops.ones_like(ce) if sample_weight is None else ops.cast(sample_weight, ce.dtype)
        self.total.assign(ops.sum(ce * w))  # assign, not add: this step only
        self.count.assign(ops.sum(w))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)


class StepTokens(keras.metrics.Metric):
    """Number of real (weighted) target tokens in the latest step."""

    def __init__(self, name="tokens", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        w = ops.ones_like(y_true) if sample_weight is None else sample_weight
        self.count.assign(ops.sum(ops.cast(w, "float32")))

    def result(self):
        return ops.convert_to_tensor(self.count)  # a value: jit cannot return a Variable


class MeanTokenLoss(keras.metrics.Metric):
    """Cross-entropy averaged over every real token seen since the last reset: over a whole
    evaluation, the honest token-level eval loss."""

    def __init__(self, name="mean_token_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ce = ops.sparse_categorical_crossentropy(y_true, ops.cast(y_pred, "float32"),
                                                 from_logits=True)
        w = ops.ones_like(ce) if sample_weight is None else ops.cast(sample_weight, ce.dtype)
        self.total.assign_add(ops.sum(ce * w))
        self.count.assign_add(ops.sum(w))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)

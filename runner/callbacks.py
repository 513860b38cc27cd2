"""Keras callbacks of a run: per-interval metrics, and evaluation every N steps."""

from __future__ import annotations

import logging
import time

import keras

from runner import optim

log = logging.getLogger(__name__)


class StepLogger(keras.callbacks.Callback):
    """Token loss, accuracy, learning rate and tokens/s, every `log_every` steps and at the end.

    It never touches `self.model`: under JAX that would sync the training state every step.
    """

    def __init__(self, tracker, optimizer_cfg, log_every: int, total_steps: int):
        super().__init__()
        self.tracker, self.optimizer_cfg = tracker, optimizer_cfg
        self.log_every, self.total_steps = log_every, total_steps
        self.losses: list[float] = []
        self.tokens_per_s: list[float] = []

    def on_train_begin(self, logs=None):
        self.last_time, self.tokens = time.perf_counter(), 0.0

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        self.tokens += logs["tokens"]
        self.losses.append(logs["token_loss"])
        if step % self.log_every and step != self.total_steps:
            return
        now = time.perf_counter()
        tps = self.tokens / (now - self.last_time)
        if step > self.log_every:  # the first interval includes compilation
            self.tokens_per_s.append(tps)
        record = {"loss": logs["token_loss"], "accuracy": logs["accuracy"],
                  "learning_rate": optim.learning_rate_at(self.optimizer_cfg, step - 1,
                                                          self.total_steps),
                  "tokens_per_s": tps, "tokens": self.tokens}
        self.tracker.log(record, step=step)
        log.info("step %d/%d  loss %.4f  acc %.3f  lr %.2e  %.0f tok/s", step, self.total_steps,
                 record["loss"], record["accuracy"], record["learning_rate"], tps)
        self.last_time, self.tokens = time.perf_counter(), 0.0


class Evaluator(keras.callbacks.Callback):
    """Token-level loss on the eval split every `every` steps and after the last step."""

    def __init__(self, tracker, eval_stream, every: int, total_steps: int):
        super().__init__()
        self.tracker, self.stream = tracker, eval_stream
        self.every, self.total_steps = every, total_steps
        self.history: list[tuple[int, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        step = batch + 1
        if step % self.every and step != self.total_steps:
            return
        paused = time.perf_counter()
        # `self.model` syncs the JAX training state into the variables before evaluating.
        result = self.model.evaluate(self.stream.dataset, steps=self.stream.steps, verbose=0,
                                     return_dict=True)
        record = {"eval_loss": result["mean_token_loss"], "eval_accuracy": result["accuracy"]}
        self.history.append((step, record["eval_loss"]))
        self.tracker.log(record, step=step)
        log.info("step %d/%d  eval loss %.4f  acc %.3f  (%.1fs)", step, self.total_steps,
                 record["eval_loss"], record["eval_accuracy"], time.perf_counter() - paused)

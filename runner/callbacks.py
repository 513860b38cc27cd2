"""Keras callbacks of a run: per-interval metrics, and evaluation every N steps."""

from __future__ import annotations

import logging
import time

import keras

from runner import checkpoints, optim
from runner.metrics import MEAN, PAIRS, STEP, flat

log = logging.getLogger(__name__)


class StepLogger(keras.callbacks.Callback):
    """Every `log_every` steps and at the end, over the steps since the last record: the loss and
    accuracy over all their real target tokens (token-weighted means, not the last batch's),
    their tokens and tokens/s; and the last step's own loss (step_loss) and the learning rate.
    metrics.jsonl, W&B and the summary's first/final/best loss all hold these same records.

    It never touches `self.model`: under JAX that would sync the training state every step.
    """

    def __init__(self, tracker, optimizer_cfg, log_every: int, total_steps: int,
                 start_step: int = 0, flops_per_step: float = 0.0):
        super().__init__()
        self.tracker, self.optimizer_cfg = tracker, optimizer_cfg
        self.log_every, self.total_steps, self.start_step = log_every, total_steps, start_step
        self.flops_per_step = flops_per_step
        self.losses: list[float] = []  # every logged record's loss, in order
        self.steps = start_step  # the last step trained
        self.interval = _EMPTY.copy()  # sums over the steps since the last record
        self.tokens_per_s: list[float] = []
        self.step_times: list[float] = []  # steady-state intervals only
        self.first_step_at = None  # wall clock (time.time()) when the first step ended

    def state(self) -> dict:
        return {"losses": self.losses, "tokens_per_s": self.tokens_per_s,
                "interval": self.interval, "steps": self.steps}

    def load_state(self, state: dict) -> None:
        self.losses, self.tokens_per_s = list(state["losses"]), list(state["tokens_per_s"])
        self.interval, self.steps = dict(state["interval"]), int(state["steps"])

    def on_train_begin(self, logs=None):
        self.last_time, self.first_interval, self.steps_in_interval = \
            time.perf_counter(), True, 0
        self.began = self.last_line = self.last_time

    def on_train_batch_end(self, batch, logs=None):
        step = self.steps = self.start_step + batch + 1
        for key, name in (("loss_sum", "step_loss_sum"), ("tokens", "tokens"),
                          ("correct", "correct")):
            self.interval[key] += float(logs[name])
        for name in _pair_metrics(logs):  # a preference objective's (TRL's names)
            self.interval[name] = self.interval.get(name, 0.0) + float(logs[STEP + name])
        if PAIRS in logs:
            self.interval[PAIRS] = self.interval.get(PAIRS, 0.0) + float(logs[PAIRS])
        self.steps_in_interval += 1
        first = self.first_step_at is None
        if first:
            self.first_step_at = time.time()
            self.last_line = time.perf_counter()
            log.info("step %d done %.1fs after training began (compiling the step included)",
                     step, self.last_line - self.began)
        if step % self.log_every and step != self.total_steps:  # no record at this step
            if not first:
                self._progress(step)
            return
        now = time.perf_counter()
        step_time = (now - self.last_time) / self.steps_in_interval
        tokens = self.interval["tokens"]
        tps = tokens / (now - self.last_time)
        timing = {"tokens_per_s": tps, "step_time_s": step_time,
                  "model_flops_per_s": self.flops_per_step / step_time}
        if not self.first_interval:  # the first interval of a process includes compilation
            self.tokens_per_s.append(tps)
            self.step_times.append(step_time)
        self.first_interval = False
        # an interval with no target token (prompts only) has no mean: null, not NaN
        mean = (lambda total: total / tokens) if tokens else (lambda total: None)
        record = {"loss": mean(self.interval["loss_sum"]),
                  "accuracy": mean(self.interval["correct"]),
                  "step_loss": float(logs["token_loss"]),
                  "learning_rate": optim.learning_rate_at(self.optimizer_cfg, step - 1,
                                                          self.total_steps),
                  "tokens": tokens}
        pairs = self.interval.get(PAIRS)
        if pairs:  # a preference objective: its loss and metrics, means over the pairs
            record.update({name: self.interval[name] / pairs for name in _pair_metrics(logs)})
            record["step_loss"] = float(logs[STEP + "loss"]) / max(float(logs[PAIRS]), 1.0)
        if record["loss"] is not None:
            self.losses.append(record["loss"])
        self.tracker.log(record, step=step, timing=timing)
        won = (f"  reward acc {record['rewards/accuracies']:.3f}  margin "
               f"{record['rewards/margins']:.4f}" if pairs else "")
        log.info("step %d/%d  loss %s  acc %s%s  lr %.2e  %.0f tok/s  %.1f GFLOP/s", step,
                 self.total_steps, _shown(record["loss"], ".4f"), _shown(record["accuracy"], ".3f"),
                 won, record["learning_rate"], tps, timing["model_flops_per_s"] / 1e9)
        self.last_time, self.interval, self.steps_in_interval = \
            time.perf_counter(), _EMPTY.copy(), 0
        self.last_line = self.last_time

    def _progress(self, step: int) -> None:
        """A line at least every PROGRESS_S seconds between records, so slow steps (a large
        model, a log_every of 100) never leave the log silent for minutes."""
        now = time.perf_counter()
        if now - self.last_line < PROGRESS_S:
            return
        log.info("step %d/%d  %.1fs/step  (next record at step %d)", step, self.total_steps,
                 (now - self.last_time) / self.steps_in_interval,
                 min(self.total_steps, step + self.log_every - step % self.log_every))
        self.last_line = now


def _shown(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


PROGRESS_S = 10.0
_EMPTY = {"loss_sum": 0.0, "tokens": 0.0, "correct": 0.0}


def _pair_metrics(logs) -> list:
    """The names of a preference objective's metrics in a step's logs (none for sft)."""
    return [key[len(STEP):] for key in logs if key.startswith(STEP)]


class Evaluator(keras.callbacks.Callback):
    """Token-level loss on the eval split every `every` steps and after the last step."""

    def __init__(self, tracker, eval_stream, every: int, total_steps: int, start_step: int = 0):
        super().__init__()
        self.tracker, self.stream = tracker, eval_stream
        self.every, self.total_steps, self.start_step = every, total_steps, start_step
        self.history: list[tuple[int, float]] = []

    def state(self) -> dict:
        return {"history": self.history}

    def load_state(self, state: dict) -> None:
        self.history = [tuple(h) for h in state["history"]]

    def on_train_batch_end(self, batch, logs=None):
        step = self.start_step + batch + 1
        if step % self.every and step != self.total_steps:
            return
        paused = time.perf_counter()
        # `self.model` syncs the JAX training state into the variables before evaluating.
        result = flat(self.model.evaluate(self.stream.dataset, steps=self.stream.steps,
                                          verbose=0, return_dict=True))
        record = {"eval_loss": float(result["mean_token_loss"]),  # over the whole eval set
                  "eval_accuracy": float(result["mean_accuracy"])}
        # a preference objective: its loss and metrics over every eval pair (TRL's eval_ names)
        record.update({"eval_" + key[len(MEAN):]: float(value) for key, value in result.items()
                       if key.startswith(MEAN)})
        self.history.append((step, record["eval_loss"]))
        self.tracker.log(record, step=step)
        won = (f"  reward acc {record['eval_rewards/accuracies']:.3f}"
               if "eval_rewards/accuracies" in record else "")
        log.info("step %d/%d  eval loss %.4f  acc %.3f%s  (%.1fs)", step, self.total_steps,
                 record["eval_loss"], record["eval_accuracy"], won,
                 time.perf_counter() - paused)


class Checkpointer(keras.callbacks.Callback):
    """Saves a checkpoint every `every` steps (runner.checkpoints), and at the step where a stop
    is agreed (runner.stopping: SIGTERM, SIGUSR1, Ctrl-C), then ends training there. On a
    resumed run (the checkpoint restored by runner.train before fit), puts back what Keras
    resets when the epoch begins: the metrics' accumulators, and the callbacks' own state.

    Put it after the other callbacks: a step's checkpoint must hold the state after that step's
    logging and evaluation, as an uninterrupted run continues from it."""

    def __init__(self, saver, every, total_steps: int, start_step: int, stateful: dict,
                 resumed=None, on_restored=None, keep_final: bool = False, should_stop=None):
        """resumed: runner.train.Start of a restored checkpoint (None: a fresh start).
        keep_final: also checkpoint the last step when `every` divides it (a full fine-tune:
        the only copy of its trained weights, which `python -m runner.export` reads).
        should_stop(step): the agreed stop Request after that step, or None; every process
        asks at every step."""
        super().__init__()
        self.keep_final, self.should_stop = keep_final, should_stop
        self.saver, self.every = saver, every
        self.total_steps, self.start_step = total_steps, start_step
        self.stateful = stateful  # name -> callback with state()/load_state()
        self.resumed, self.on_restored = resumed, on_restored
        self.stopped = None  # (Request, step, checkpoint folder) once a stop was agreed

    def on_epoch_begin(self, epoch, logs=None):
        if self.resumed is None:
            return
        for variable, value in zip(self.model.metrics_variables, self.resumed.metrics):
            variable.assign(value)
        for name, callback in self.stateful.items():
            callback.load_state(self.resumed.meta["callbacks"][name])
        if self.on_restored is not None:
            self.on_restored(self.model)
        log.info("resumed from %s", self.resumed.checkpoint.path)
        self.resumed = None

    def on_train_batch_end(self, batch, logs=None):
        step = self.start_step + batch + 1
        request = self.should_stop(step) if self.should_stop is not None else None
        periodic = bool(self.every) and not step % self.every and (
            step < self.total_steps or self.keep_final)
        if periodic or request is not None:
            state, paths = checkpoints.capture(self.model)  # `self.model` syncs the JAX state
            path = self.saver.save(step, state, {"paths": paths, "callbacks": {
                name: callback.state() for name, callback in self.stateful.items()}})
            if request is not None:
                self.stopped = (request, step, str(path))
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.saver.wait()
        self.saver.close()

"""One resolved config -> one training run in one folder. Reads top to bottom like a tutorial.

    plan the sharding (no weights) -> build model and optimizer inside the distribution ->
    data -> sample -> fit -> sample -> summary

Called by runner.__main__ (the CLI) and directly by tests; it never reads Hydra's global state
and never sets process-wide environment (the entry point does that before jax is imported).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from omegaconf import OmegaConf

from runner import data, layout, mesh, model, optim, outputs, plan
from runner.errors import UserError
from runner.tracking import Tracker, preflight

log = logging.getLogger(__name__)


def abstract_optimizer_variables(optimizer_cfg, trainable_variables):
    """The optimizer's slot variables for these (stateless) trainable variables, no memory."""
    import keras

    optimizer = optim.build_optimizer(optimizer_cfg)  # its two scalars are real; slots are not
    with keras.StatelessScope(initialize_variables=False):
        optimizer.build(trainable_variables)
    return optimizer.variables


def make_plan(cfg, n_devices: int) -> tuple[plan.Plan, list[layout.Rule]]:
    """The sharding plan for this config on n_devices (and the layout rules behind it), built
    with no weights."""
    axis_sizes = mesh.axis_sizes(cfg.mesh, n_devices)
    backbone = model.abstract_backbone(cfg.model, cfg.lora)
    rules = layout.configured_rules(cfg.layout, type(backbone), axis_sizes, cfg.mesh)
    opt_vars = abstract_optimizer_variables(cfg.optimizer, backbone.trainable_variables)
    the_plan = plan.make_plan(backbone.variables, opt_vars, rules, axis_sizes,
                              batch_size=cfg.train.batch_size, batch_axis=cfg.mesh.batch_axis)
    return the_plan, rules


def actual_specs(variables) -> dict[str, tuple]:
    """path -> partition spec as JAX placed it, padded to the variable's rank."""
    specs = {}
    for v in variables:
        spec = tuple(v.value.sharding.spec)
        specs[v.path] = spec + (None,) * (len(v.shape) - len(spec))
    return specs


def verify_placement(the_plan: plan.Plan, variables) -> None:
    """The plan is what sharding.tsv and W&B report; it must be what JAX actually did."""
    planned = {e.path: e.spec for e in the_plan.entries}
    wrong = [f"{p}: planned {planned.get(p)}, placed {s}"
             for p, s in actual_specs(variables).items() if planned.get(p) != s]
    if wrong:
        raise RuntimeError("sharding plan and placement disagree (a runner bug):\n"
                           + "\n".join(wrong[:10]))


def generate_samples(causal_lm, generate_cfg, batch_axis_size: int) -> list[str]:
    """Generate for every prompt; the prompt batch is padded to a multiple of the batch axis,
    which generate() under model parallel requires, and the padding dropped again."""
    prompts = list(generate_cfg.prompts)
    if not prompts:
        return []
    padded = prompts + [prompts[-1]] * (-len(prompts) % batch_axis_size)
    out = causal_lm.generate(padded, max_length=generate_cfg.max_length)
    return [str(t) for t in list(out)[:len(prompts)]]


def _step_logger(tracker, optimizer_cfg, train_cfg, total_steps):
    import keras

    class StepLogger(keras.callbacks.Callback):
        """Token loss, learning rate and tokens/s, every `log_every` steps and at the end."""

        def on_train_begin(self, logs=None):
            self.last_time, self.tokens, self.losses = time.perf_counter(), 0.0, []
            self.tokens_per_s = []

        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1
            self.tokens += logs["tokens"]
            self.losses.append(logs["token_loss"])
            if step % train_cfg.log_every and step != total_steps:
                return
            now = time.perf_counter()
            tps = self.tokens / (now - self.last_time)
            if step > train_cfg.log_every:  # the first interval includes compilation
                self.tokens_per_s.append(tps)
            record = {"loss": logs["token_loss"], "accuracy": logs["accuracy"],
                      "learning_rate": optim.learning_rate_at(optimizer_cfg, step - 1),
                      "tokens_per_s": tps, "tokens": self.tokens}
            tracker.log(record, step=step)
            log.info("step %d/%d  loss %.4f  acc %.3f  lr %.2e  %.0f tok/s", step, total_steps,
                     record["loss"], record["accuracy"], record["learning_rate"], tps)
            self.last_time, self.tokens = time.perf_counter(), 0.0

    return StepLogger()


def run(cfg, run_dir) -> dict:
    """Train the experiment `cfg` (a composed, typed config) into `run_dir`; return the summary."""
    import keras

    from runner.metrics import StepTokenLoss, StepTokens

    start = time.time()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    outputs.claim(run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(resolved))
    summary = {"status": "running", "name": cfg.name}
    outputs.write_json(run_dir / "summary.json", summary)

    preflight(cfg.tracking)
    keras.backend.clear_session()  # no layer-name counters or policies from an earlier job
    keras.utils.set_random_seed(cfg.seed)

    # 1. The sharding plan, from variables with no memory behind them: fails here, in seconds,
    #    for a bad mesh, layout rule, divisibility or batch size, before any weight is loaded.
    devices = keras.distribution.list_devices()
    the_plan, rules = make_plan(cfg, len(devices))
    the_plan.check()
    plan.write_tsv(the_plan, run_dir / "sharding.tsv")
    axis_sizes = the_plan.axis_sizes
    outputs.write_json(run_dir / "env.json", outputs.environment(axis_sizes))

    # 2. Model and optimizer inside the distribution, so every variable is born sharded.
    device_mesh = mesh.build_mesh(cfg.mesh, devices)
    distribution = keras.distribution.ModelParallel(
        layout_map=layout.build_layout_map(rules, device_mesh),
        batch_dim_name=cfg.mesh.batch_axis)
    with distribution.scope():
        causal_lm = model.build_causal_lm(cfg.model, cfg.lora)
        optimizer = optim.build_optimizer(cfg.optimizer)
        causal_lm.compile(
            optimizer=optimizer,
            # Averaged over real tokens only (padding has sample weight 0).
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"),
            weighted_metrics=[StepTokenLoss(), StepTokens(),
                              keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            sampler=getattr(cfg.generate.sampler, "value", cfg.generate.sampler),
        )
        optimizer.build(causal_lm.trainable_variables)
        verify_placement(the_plan, causal_lm.backbone.variables + optimizer.variables)

        # 3. Data: the preprocessor from the preset, at the configured sequence length.
        preprocessor = causal_lm.preprocessor
        preprocessor.sequence_length = cfg.train.sequence_length
        stream = data.build(cfg.dataset, preprocessor, cfg.train.batch_size, cfg.train.epochs,
                            cfg.train.steps, cfg.seed)

        tracker = Tracker(cfg.tracking, run_dir, resolved, name=f"{cfg.name}-{run_dir.name}")
        try:
            summary.update(total_params=the_plan.total_params,
                           trainable_params=the_plan.trainable_params)
            tracker.summary(summary)
            tracker.table("sharding", plan.TSV_COLUMNS, plan.tsv_rows(the_plan))
            log.info("params: %s total, %s trainable; mesh %s; %d steps",
                     f"{the_plan.total_params:,}", f"{the_plan.trainable_params:,}", axis_sizes,
                     stream.steps)

            # 4. Sample, train, sample.
            before = generate_samples(causal_lm, cfg.generate, axis_sizes[cfg.mesh.batch_axis])
            causal_lm.preprocessor = None  # batches arrive preprocessed; fit must not redo it
            logger = _step_logger(tracker, cfg.optimizer, cfg.train, stream.steps)
            train_start = time.time()
            causal_lm.fit(stream.dataset, epochs=1, steps_per_epoch=stream.steps,
                          callbacks=[logger], verbose=0, shuffle=False)
            train_seconds = time.time() - train_start
            causal_lm.preprocessor = preprocessor
            after = generate_samples(causal_lm, cfg.generate, axis_sizes[cfg.mesh.batch_axis])
            _write_samples(run_dir, tracker, cfg.generate.prompts, before, after)

            summary.update(_results(logger, stream, train_seconds, start))
            summary["status"] = "finished"
            tracker.summary(summary)
            summary["wandb_dir"] = tracker.wandb_dir
        finally:
            tracker.finish(0 if summary["status"] == "finished" else 1)
    outputs.write_json(run_dir / "summary.json", summary)
    log.info("finished: loss %.4f -> %.4f in %.0fs; outputs in %s", summary["first_loss"],
             summary["final_loss"], summary["wall_time_s"], run_dir)
    return summary


def _write_samples(run_dir: Path, tracker: Tracker, prompts, before, after) -> None:
    rows = [[p, b, a] for p, b, a in zip(prompts, before, after)]
    with open(run_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        import json

        for p, b, a in rows:
            f.write(json.dumps({"prompt": p, "before": b, "after": a}) + "\n")
    tracker.table("samples", ["prompt", "before", "after"], rows)
    for p, b, a in rows:
        log.info("sample %r\n  before: %r\n  after:  %r", p, b, a)


def _results(logger, stream, train_seconds: float, start: float) -> dict:
    losses = logger.losses
    tps = logger.tokens_per_s
    return {
        "steps": len(losses),
        "epochs": len(losses) / stream.steps_per_epoch,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "best_loss": min(losses),
        "tokens_per_s": sum(tps) / len(tps) if tps else math.nan,
        "train_time_s": train_seconds,
        "wall_time_s": time.time() - start,
    }


def fail(run_dir, error: BaseException) -> None:
    """Mark a run folder failed (never leave it looking finished or running)."""
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        path = run_dir / "summary.json"
        summary = {}
        if path.exists():
            import json

            summary = json.loads(path.read_text())
        summary.update(status="failed", error=str(error).splitlines()[0] if str(error) else
                       type(error).__name__)
        outputs.write_json(path, summary)


__all__ = ["run", "make_plan", "fail", "UserError"]

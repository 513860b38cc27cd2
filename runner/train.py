"""One resolved config -> one training run in one folder. Reads top to bottom like a tutorial.

    plan the sharding (no weights) -> build model and optimizer inside the distribution ->
    data -> sample -> fit -> sample -> summary

Called by runner.__main__ (the CLI) and directly by tests; it never reads Hydra's global state
and never sets process-wide environment (the entry point does that before jax is imported).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

from omegaconf import OmegaConf

from runner import adapters, data, generation, layout, mesh, model, optim, outputs, plan
from runner.callbacks import Evaluator, StepLogger
from runner.errors import UserError
from runner.tracking import Tracker, preflight

log = logging.getLogger(__name__)


def abstract_optimizer_variables(optimizer_cfg, trainable_variables):
    """The optimizer's slot variables for these (stateless) trainable variables, no memory."""
    optimizer = optim.build_optimizer(optimizer_cfg)  # its two scalars are real; slots are not
    with model.no_memory_scope():
        optimizer.build(trainable_variables)
    return optimizer.variables


def make_plan(cfg, n_devices: int) -> tuple[plan.Plan, list[layout.Rule]]:
    """The sharding plan for this config on n_devices (and the layout rules behind it), built
    with no weights."""
    axis_sizes = mesh.axis_sizes(cfg.mesh, n_devices)
    model.check_supported(cfg.quant, cfg.lora, axis_sizes[cfg.mesh.model_axis])
    backbone = model.abstract_backbone(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
    rules = layout.configured_rules(cfg.layout, type(backbone), axis_sizes, cfg.mesh)
    opt_vars = abstract_optimizer_variables(cfg.optimizer, backbone.trainable_variables)
    the_plan = plan.make_plan(backbone.variables, opt_vars, rules, axis_sizes,
                              batch_size=cfg.train.batch_size, batch_axis=cfg.mesh.batch_axis)
    return dataclasses.replace(the_plan, dimensions=model.dimensions(backbone)), rules


def memory_per_device(cfg, the_plan: plan.Plan):
    """The plan's bytes per device (weights, LoRA, gradients, optimizer, activations)."""
    from runner.plan import memory

    return memory.memory_per_device(
        the_plan, the_plan.dimensions, cfg.train.batch_size, cfg.train.sequence_length,
        cfg.mesh.batch_axis, cfg.mesh.model_axis,
        memory.compute_itemsize(model.dtype_policy(cfg.train.precision)))


def _warn_if_it_may_not_fit(estimate) -> None:
    """A warning, not an error: the estimate is approximate, and the run will say for sure."""
    from runner.plan import memory
    from runner.plan.report import human_bytes

    device = memory.local_device_memory()
    problem = memory.fit_problem(estimate, device)
    log.info("memory per device (estimate): %s of %s", human_bytes(estimate.total),
             human_bytes(device.bytes) if device.bytes else "unknown")
    if problem:
        log.warning("%s (python -m runner.plan shows the breakdown)", problem)


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


def distribution_for(cfg, rules, devices):
    """ModelParallel over the configured mesh with the plan's layout rules."""
    import keras

    device_mesh = mesh.build_mesh(cfg.mesh, devices)
    return keras.distribution.ModelParallel(
        layout_map=layout.build_layout_map(rules, device_mesh), batch_dim_name=cfg.mesh.batch_axis)


def compile_for_training(causal_lm, optimizer, generate_cfg, seed: int) -> None:
    import keras

    from runner.metrics import MeanTokenLoss, StepTokenLoss, StepTokens

    causal_lm.compile(
        optimizer=optimizer,
        # Averaged over real tokens only: padding and prompt tokens have sample weight 0.
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[StepTokenLoss(), StepTokens(), MeanTokenLoss(),
                          keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        sampler=generation.build_sampler(generate_cfg, seed),
    )


def run(cfg, run_dir) -> dict:
    """Train the experiment `cfg` (a composed, typed config) into `run_dir`; return the summary."""
    import keras

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
    #    for a bad mesh, layout rule, divisibility, batch size or unsupported combination,
    #    before any weight is loaded.
    devices = keras.distribution.list_devices()
    the_plan, rules = make_plan(cfg, len(devices))
    the_plan.check()
    plan.write_tsv(the_plan, run_dir / "sharding.tsv")
    estimate = memory_per_device(cfg, the_plan)
    summary["memory_per_device_estimate"] = {**dataclasses.asdict(estimate),
                                             "total": estimate.total}
    _warn_if_it_may_not_fit(estimate)
    axis_sizes = the_plan.axis_sizes
    batch_axis_size = axis_sizes[cfg.mesh.batch_axis]
    outputs.write_json(run_dir / "env.json", outputs.environment(axis_sizes))

    # 2. Model, data and optimizer inside the distribution, so every variable is born sharded.
    with distribution_for(cfg, rules, devices).scope():
        causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
        preprocessor = causal_lm.preprocessor
        preprocessor.sequence_length = cfg.train.sequence_length
        stream = data.build(cfg.dataset, preprocessor, cfg.train.batch_size,
                            cfg.train.sequence_length, cfg.train.epochs, cfg.train.steps, cfg.seed)
        eval_stream = None
        if cfg.dataset.eval_split:
            eval_stream = data.build_eval(cfg.dataset, preprocessor, cfg.train.batch_size,
                                          cfg.train.sequence_length, cfg.train.eval_steps)
        optimizer = optim.build_optimizer(cfg.optimizer, stream.steps)
        compile_for_training(causal_lm, optimizer, cfg.generate, cfg.seed)
        optimizer.build(causal_lm.trainable_variables)
        verify_placement(the_plan, causal_lm.backbone.variables + optimizer.variables)

        tracker = Tracker(cfg.tracking, run_dir, resolved, name=f"{cfg.name}-{run_dir.name}")
        try:
            summary.update(total_params=the_plan.total_params,
                           trainable_params=the_plan.trainable_params)
            tracker.summary(summary)
            tracker.table("sharding", plan.TSV_COLUMNS, plan.tsv_rows(the_plan))
            log.info("params: %s total, %s trainable; mesh %s; %d steps",
                     f"{the_plan.total_params:,}", f"{the_plan.trainable_params:,}", axis_sizes,
                     stream.steps)

            # 3. Sample, train (evaluating on the way), sample.
            before = generation.generate(causal_lm, cfg.generate.prompts,
                                         cfg.generate.max_length, batch_axis_size)
            logger = StepLogger(tracker, cfg.optimizer, cfg.train.log_every, stream.steps)
            callbacks = [logger]
            if eval_stream is not None:
                callbacks.append(Evaluator(tracker, eval_stream,
                                           cfg.train.eval_every or stream.steps, stream.steps))
            causal_lm.preprocessor = None  # batches arrive preprocessed; fit must not redo it
            train_start = time.time()
            causal_lm.fit(stream.dataset, epochs=1, steps_per_epoch=stream.steps,
                          callbacks=callbacks, verbose=0, shuffle=False)
            train_seconds = time.time() - train_start
            causal_lm.preprocessor = preprocessor
            after = generation.generate(causal_lm, cfg.generate.prompts,
                                        cfg.generate.max_length, batch_axis_size)
            _write_samples(run_dir, tracker, cfg.generate.prompts, before, after)

            # 4. What the run leaves for later: the adapter (and a merged preset, if asked).
            summary.update(_results(logger, callbacks[1:], stream, train_seconds, start))
            summary.update(_save_artifacts(cfg, causal_lm, preprocessor, run_dir,
                                           batch_axis_size))
            summary["status"] = "finished"
            tracker.summary(summary)
            summary["wandb_dir"] = tracker.wandb_dir
        finally:
            tracker.finish(0 if summary["status"] == "finished" else 1)
    outputs.write_json(run_dir / "summary.json", summary)
    log.info("finished: loss %.4f -> %.4f in %.0fs; outputs in %s", summary["first_loss"],
             summary["final_loss"], summary["wall_time_s"], run_dir)
    return summary


def _save_artifacts(cfg, causal_lm, preprocessor, run_dir: Path, batch_axis_size: int) -> dict:
    saved = {}
    if cfg.lora.rank > 0 and cfg.train.save_adapter:
        probe_prompts = list(cfg.generate.prompts) or ["The"]
        probe = generation.probe_logits(causal_lm, preprocessor, probe_prompts, batch_axis_size)
        saved["adapter"] = str(adapters.save(causal_lm, run_dir, probe))
        log.info("adapter saved: %s (reload: python -m runner.generate %s)", saved["adapter"],
                 run_dir)
    if cfg.train.save_merged_preset:
        if cfg.lora.rank == 0 or getattr(cfg.quant.mode, "value", cfg.quant.mode) != "none":
            raise UserError("train.save_merged_preset needs LoRA on a base that is not "
                            "quantized (lora.rank > 0, quant=none)")
        base = model.build_causal_lm(cfg.model, OmegaConf.create({"rank": 0}), cfg.quant,
                                     cfg.train.precision)
        out = adapters.save_merged_preset(causal_lm, base, run_dir / adapters.MERGED_DIR,
                                          {"preset": cfg.model.preset, "rank": cfg.lora.rank,
                                           "alpha": model.lora_alpha_of(cfg.lora)})
        saved["merged_preset"] = str(out)
    return saved


def _write_samples(run_dir: Path, tracker: Tracker, prompts, before, after) -> None:
    rows = [[p, b, a] for p, b, a in zip(prompts, before, after)]
    with open(run_dir / "samples.jsonl", "w", encoding="utf-8") as f:
        import json

        for p, b, a in rows:
            f.write(json.dumps({"prompt": p, "before": b, "after": a}) + "\n")
    tracker.table("samples", ["prompt", "before", "after"], rows)
    for p, b, a in rows:
        log.info("sample %r\n  before: %r\n  after:  %r", p, b, a)


def _results(logger, evaluators, stream, train_seconds: float, start: float) -> dict:
    losses = logger.losses
    tps = logger.tokens_per_s
    evals = [loss for e in evaluators for _, loss in e.history]
    extra = {"final_eval_loss": evals[-1], "best_eval_loss": min(evals)} if evals else {}
    return {**extra,
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

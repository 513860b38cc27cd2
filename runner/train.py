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
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from runner import (adapters, checkpoints, data, flops, generation, layout, mesh, model,
                    optim, outputs, plan)
from runner.callbacks import Checkpointer, Evaluator, StepLogger
from runner.errors import UserError
from runner.tracking import Tracker, preflight, truncate_after

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

    from runner.metrics import TokenMetrics

    causal_lm.compile(
        optimizer=optimizer,
        # Averaged over real tokens only: padding and prompt tokens have sample weight 0.
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[TokenMetrics(), keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        sampler=generation.build_sampler(generate_cfg, seed),
    )


def run(cfg, run_dir, run_name: str | None = None, group: str | None = None) -> dict:
    """Train the experiment `cfg` (a composed, typed config) into `run_dir`; return the summary.

    A folder whose run of the same config finished is left alone (its summary is returned); one
    whose run was cut resumes from its last checkpoint. `run_name` and `group` name the W&B run
    (a sweep groups its jobs and names each by its overrides)."""
    start = time.time()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    claim = _claim(run_dir, resolved, cfg.train.resume)
    try:
        if claim.state == "finished":
            log.info("%s already holds this run, finished: nothing to do", run_dir)
            return claim.summary
        return _run(cfg, run_dir, resolved, claim, start, run_name, group)
    finally:
        claim.release()


_CLAIM_STATES = ("new", "finished", "resume", "restart")


def _claim(run_dir: Path, resolved: dict, resume: bool) -> outputs.Claim:
    """Process 0 claims the folder; in a multi-process program it tells the others what it
    found (they read the same shared folder, and must all resume from the same step)."""
    import jax

    if jax.process_count() == 1:
        return outputs.claim(run_dir, resolved, resume=resume)
    import numpy as np
    from jax.experimental import multihost_utils

    claim, refused, code = None, None, [-1, 0]
    if jax.process_index() == 0:
        try:
            claim = outputs.claim(run_dir, resolved, resume=resume)
            code = [_CLAIM_STATES.index(claim.state),
                    claim.checkpoint.step if claim.checkpoint else 0]
        except UserError as exc:
            refused = exc
    code = [int(c) for c in multihost_utils.broadcast_one_to_all(np.array(code, np.int32))]
    if refused is not None:
        raise refused
    if code[0] < 0:
        raise outputs.RunDirTaken(f"process 0 refused hydra.run.dir={run_dir} (see its log)")
    if claim is not None:
        return claim
    state, step = _CLAIM_STATES[code[0]], code[1]
    summary = outputs.read_json(run_dir / "summary.json") if state == "finished" else None
    checkpoint = checkpoints.at(run_dir, step) if state == "resume" else None
    return outputs.Claim(state, summary=summary, checkpoint=checkpoint)


def _run(cfg, run_dir: Path, resolved: dict, claim, start: float, run_name, group) -> dict:
    import jax
    import keras

    primary = jax.process_index() == 0  # the only process that writes the run folder
    if jax.process_count() > 1 and cfg.train.save_merged_preset:
        raise UserError("train.save_merged_preset is not supported in a multi-process run; "
                        "merge later from the adapter (python -m runner.generate) or run with "
                        "one process")
    start_step = claim.checkpoint.step if claim.state == "resume" else 0
    if claim.state in ("resume", "restart"):
        log.info("%s holds this run, cut at step %d: %s", run_dir, start_step,
                 f"resuming from {claim.checkpoint.path}" if start_step else "starting over")
        if primary:
            truncate_after(run_dir, start_step)  # those steps are logged again, identically
    summary = {"status": "running", "name": cfg.name}
    if start_step:
        summary["resumed_from_step"] = start_step
    if primary:
        (run_dir / "resolved_config.yaml").write_text(OmegaConf.to_yaml(resolved))
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
    if primary:
        plan.write_tsv(the_plan, run_dir / "sharding.tsv")
    estimate = memory_per_device(cfg, the_plan)
    summary["memory_per_device_estimate"] = {**dataclasses.asdict(estimate),
                                             "total": estimate.total}
    _warn_if_it_may_not_fit(estimate)
    axis_sizes = the_plan.axis_sizes
    batch_axis_size = axis_sizes[cfg.mesh.batch_axis]
    if primary:
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
        variables = causal_lm.backbone.variables + optimizer.variables
        verify_placement(the_plan, variables)

        name = run_name or f"{cfg.name}-{run_dir.name}"
        tracker = Tracker(cfg.tracking, run_dir, resolved,
                          name=f"{name} (resumed at step {start_step})" if start_step else name,
                          group=group, write=primary)
        try:
            summary.update(total_params=the_plan.total_params,
                           trainable_params=the_plan.trainable_params)
            tracker.summary(summary)
            tracker.table("sharding", plan.TSV_COLUMNS, plan.tsv_rows(the_plan))
            log.info("params: %s total, %s trainable; mesh %s; %d steps",
                     f"{the_plan.total_params:,}", f"{the_plan.trainable_params:,}", axis_sizes,
                     stream.steps)

            # 3. Sample, train (evaluating and checkpointing on the way), sample. A resumed run
            #    samples "before" from the same fresh weights, then restores its checkpoint.
            prompts = list(cfg.generate.prompts)
            if prompts and jax.process_count() > 1:
                log.warning("samples skipped: keras-hub's generate() cannot fetch token arrays "
                            "spread over %d processes; sample from the saved adapter on one "
                            "host with python -m runner.generate RUN_DIR", jax.process_count())
                prompts = []
            before = generation.generate(causal_lm, prompts, cfg.generate.max_length,
                                         batch_axis_size)
            # Model FLOPs per step: the achieved FLOP/s is logged live; MFU divides it by this
            #  machine's peak matmul FLOP/s, measured after training (measuring it first slowed
            #  the training steps that followed on CPU).
            tokens_per_step = cfg.train.batch_size * cfg.train.sequence_length
            flops_per_step = flops.flops_per_token(
                the_plan.dimensions, the_plan.total_params, the_plan.trainable_params,
                cfg.train.sequence_length) * tokens_per_step if the_plan.dimensions else 0.0
            summary.update(tokens_per_step=tokens_per_step, flops_per_step=flops_per_step)
            logger = StepLogger(tracker, cfg.optimizer, cfg.train.log_every, stream.steps,
                                start_step, flops_per_step)
            stateful = {"logger": logger}
            if eval_stream is not None:
                stateful["evaluator"] = Evaluator(tracker, eval_stream,
                                                  cfg.train.eval_every or stream.steps,
                                                  stream.steps, start_step)
            saver = Checkpointer(
                checkpoints.Saver(run_dir, write=primary), cfg.train.checkpoint_every,
                stream.steps, start_step,
                stateful, resume_from=claim.checkpoint if start_step else None,
                on_restored=lambda m: verify_placement(the_plan, variables))
            causal_lm.preprocessor = None  # batches arrive preprocessed; fit must not redo it
            train_start = time.time()
            # A resumed run replays the stream to where the checkpoint was taken.
            causal_lm.fit(stream.dataset.skip(start_step), epochs=1,
                          steps_per_epoch=stream.steps - start_step,
                          callbacks=[*stateful.values(), saver], verbose=0, shuffle=False)
            train_seconds = time.time() - train_start
            if flops_per_step:
                summary["peak_flops"] = flops.peak_matmul_flops()
            causal_lm.preprocessor = preprocessor
            after = generation.generate(causal_lm, prompts, cfg.generate.max_length,
                                        batch_axis_size)
            if primary:
                _write_samples(run_dir, tracker, prompts, before, after)

            # 4. What the run leaves for later: the adapter (and a merged preset, if asked).
            evaluators = [stateful["evaluator"]] if "evaluator" in stateful else []
            summary.update(_results(logger, evaluators, stream, train_seconds, start,
                                    summary.get("peak_flops", 0.0)))
            summary.update(_save_artifacts(cfg, causal_lm, preprocessor, run_dir,
                                           batch_axis_size, primary))
            summary["status"] = "finished"
            tracker.summary(summary)
            summary["wandb_dir"] = tracker.wandb_dir
        finally:
            tracker.finish(0 if summary["status"] == "finished" else 1)
    if primary:
        outputs.write_json(run_dir / "summary.json", summary)
    log.info("finished: loss %.4f -> %.4f in %.0fs; outputs in %s", summary["first_loss"],
             summary["final_loss"], summary["wall_time_s"], run_dir)
    return summary


def _save_artifacts(cfg, causal_lm, preprocessor, run_dir: Path, batch_axis_size: int,
                    primary: bool) -> dict:
    saved = {}
    if cfg.lora.rank > 0 and cfg.train.save_adapter:
        import jax

        probe = None  # the logits a reload must reproduce; not fetchable across processes
        if jax.process_count() == 1:
            probe_prompts = list(cfg.generate.prompts) or ["The"]
            probe = generation.probe_logits(causal_lm, preprocessor, probe_prompts,
                                            batch_axis_size)
        if not primary:
            return saved
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


def _results(logger, evaluators, stream, train_seconds: float, start: float,
             peak_flops: float) -> dict:
    losses = logger.losses
    tps = logger.tokens_per_s
    times = logger.step_times
    steady = sum(times) / len(times) if times else math.nan
    evals = [loss for e in evaluators for _, loss in e.history]
    extra = {"final_eval_loss": evals[-1], "best_eval_loss": min(evals)} if evals else {}
    return {**extra,
        "steps": len(losses),
        "epochs": len(losses) / stream.steps_per_epoch,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "best_loss": min(losses),
        "tokens_per_s": sum(tps) / len(tps) if tps else math.nan,
        "step_time_s": steady,
        "model_flops_per_s": logger.flops_per_step / steady if times else math.nan,
        "mfu": logger.flops_per_step / steady / peak_flops if peak_flops and times else math.nan,
        "first_step_at": logger.first_step_at,
        "train_time_s": train_seconds,
        "wall_time_s": time.time() - start,
    }


def fail(run_dir, error: BaseException) -> None:
    """Mark a run folder failed (never leave it looking finished or running). Process 0 only:
    the others of a multi-process program never write the folder."""
    jax = sys.modules.get("jax")
    if jax is not None and jax.process_index() != 0:
        return
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

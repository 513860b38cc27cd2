"""One resolved config -> one training run in one folder, in five named stages:

    claim           the folder: new, finished (nothing to do), or cut (resume from a checkpoint)
    plan_and_check  everything that needs no weights: values, combinations, the dataset, the
                    sharding plan and the memory it needs; the folder's first files
    build           model, data and optimizer inside the distribution, placement checked
    fit             sample, resume (the newest checkpoint that restores), train (logging,
                    evaluating, checkpointing), sample again
    finish          results, adapter (and merged preset), the final summary

Each stage is a short function that gets what the earlier ones decided as small frozen records
(Decided, Built, Start, Fitted). Called by runner.__main__ (the CLI), runner.rerun and tests; it
never reads Hydra's global state or sets process-wide environment (runner.startup does).

While it runs, a stop signal (runner.stopping: SIGTERM, SIGUSR1, Ctrl-C) ends training after the
step in flight with a checkpoint at that step; run() then marks the folder and raises Stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Optional

from omegaconf import OmegaConf

from runner import (
    adapters,
    checkpoints,
    checks,
    data,
    documents,
    flops,
    generation,
    layout,
    model,
    objective,
    optim,
    provenance,
    reference_model,
)
from runner.callbacks import Checkpointer, Evaluator, StepLogger
from runner.claims import Claim, claim_across_processes
from runner.datasets import synthetic
from runner.distributed import gather_ints
from runner.errors import UserError
from runner.export.run import Source, write
from runner.plan import TSV_COLUMNS, Plan, tsv_rows, write_tsv
from runner.plan import memory as mem
from runner.plan.assemble import estimate_memory, make_plan
from runner.plan.placement import verify_placement
from runner.plan.report import human_bytes
from runner.presets import Described
from runner.rundir import CHECKPOINTS, ENV, MERGED, SET_ASIDE, SHARDING, RunDir, write_json
from runner.stopping import Request, Stopped, StopRequests
from runner.tracking import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decided:
    """What claim and plan_and_check decided: where, from which step, on what, split how."""
    folder: RunDir
    resolved: dict  # the resolved config, as in resolved_config.yaml and W&B
    claim: Claim
    primary: bool  # process 0: the only one that writes the folder
    process_count: int
    devices: tuple
    described: Described  # the preset, described once by the check stage
    plan: Plan  # variables are placed by its own specs (Plan.placement_rules)
    memory: mem.Memory
    batch_axis_size: int
    started: float  # time.time() when the run began


@dataclass(frozen=True)
class Built:
    causal_lm: object
    preprocessor: object
    stream: data.Stream
    eval_stream: Optional[data.Stream]
    variables: tuple  # the model's and the optimizer's, as the plan lists them


@dataclass(frozen=True)
class Start:
    """Where training starts: step 0, or a restored checkpoint's step with what fit resets."""
    step: int = 0
    checkpoint: Optional[object] = None  # runner.checkpoints.Checkpoint restored
    meta: Optional[dict] = None  # its meta: the callbacks' state
    metrics: tuple = ()  # the metrics' restored accumulators (fit resets them; put back)


@dataclass(frozen=True)
class Fitted:
    logger: StepLogger
    evaluator: Optional[Evaluator]
    samples: tuple  # (prompt, before, after) per prompt
    train_seconds: float
    flops_per_step: float
    peak_flops: float  # measured after training (0 when the model's FLOPs are unknown)


def run(cfg, run_dir, run_name: str | None = None, group: str | None = None) -> dict:
    """Train the experiment `cfg` (a composed, typed config) into `run_dir`; return the summary.

    A folder whose run of the same experiment finished is left alone (its summary is returned);
    one whose run was cut resumes from its newest checkpoint that restores. `run_name` and
    `group` name the W&B run (a sweep groups its jobs and names each by its overrides). A stop
    signal ends it with Stopped (summary.json says "preempted" or "interrupted")."""
    started = time.time()
    folder = RunDir(run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    with claim_across_processes(folder, resolved, cfg.train.resume) as claim:
        if claim.state == "finished":
            log.info("%s already holds this run, finished: nothing to do", folder.path)
            return claim.summary
        import jax

        primary = jax.process_index() == 0
        with StopRequests(on_second=_mark_cut(folder, primary)) as stops:
            decided = plan_and_check(cfg, folder, resolved, claim, started)
            placed = layout.distribution(cfg.mesh, decided.plan.placement_rules(),
                                         decided.devices)
            with placed.scope():
                built = build(cfg, decided)
                return _train(cfg, decided, built, stops, run_name, group)


def _train(cfg, decided: Decided, built: Built, stops: StopRequests, run_name, group) -> dict:
    """Sample, resume, fit and finish, with the W&B run open; a stop signal ends them with the
    folder (and W&B) saying so."""
    lm = built.causal_lm
    prompts = _prompts(cfg, decided.process_count)
    start, tracker, summary = Start(), None, {}
    try:
        stops.stop_now(decided.process_count, decided.claim.start_step)  # asked while loading
        if prompts:
            _phase(decided.started, f"sampling {len(prompts)} prompts before training")
        before = generation.generate(lm, prompts, cfg.generate.max_length,
                                     decided.batch_axis_size)
        start = resume(cfg, decided, built)
        tracker = open_tracker(cfg, decided, start, run_name, group)
        fitted = fit(cfg, decided, built, start, tracker, stops, prompts, before)
        summary = finish(cfg, decided, built, start, fitted, tracker)
    except Stopped as stop:
        summary = _summary(cfg, start, decided, built, status=stop.request.status,
                           signal=stop.request.name, stopped_at_step=stop.step,
                           checkpoint=stop.checkpoint, wall_time_s=time.time() - decided.started)
        if tracker is not None:
            tracker.summary(summary)
            if stop.request.status == "preempted":
                tracker.preempting()
        if decided.primary:
            decided.folder.write_summary(summary)
        log.warning("%s", stop)
        raise
    finally:
        if tracker is not None:
            tracker.finish(0 if summary.get("status") == "finished" else 1)
    return summary


def _mark_cut(folder: RunDir, primary: bool):
    """What a second stop signal does before the process ends: say so in summary.json."""
    def mark(request: Request) -> None:
        if primary and folder.summary().get("status") == "running":
            folder.write_summary({**folder.summary(), "status": request.status,
                                  "signal": request.name, "error": f"a second {request.name} "
                                  "ended the process at once; it resumes from its last "
                                  "checkpoint"})
    return mark


def plan_and_check(cfg, folder: RunDir, resolved: dict, claim: Claim, started: float) -> Decided:
    """Every check that needs no weights, then the sharding plan: a bad value, combination,
    dataset, mesh, layout rule or batch size fails here, in seconds, before any weight loads."""
    import jax
    import keras

    primary = jax.process_index() == 0
    _phase(started, "checking the config, the preset and the data (data not prepared yet is "
                    "prepared now)")
    if claim.state == "restart":
        log.info("%s holds this run, cut before its first checkpoint: starting over",
                 folder.path)
    if primary:
        folder.write_resolved_config(resolved)
        folder.write_summary(_summary(cfg, Start()))
    keras.backend.clear_session()  # no layer-name counters or policies from an earlier job
    keras.utils.set_random_seed(cfg.seed)
    devices = tuple(keras.distribution.list_devices())
    findings = checks.run_checks(cfg, len(devices), jax.process_count())
    findings.raise_first()
    _phase(started, "planning the sharding")
    the_plan, _ = make_plan(cfg, len(devices), findings.described)
    the_plan.check()
    _log_plan_notes(the_plan)
    memory = estimate_memory(cfg, the_plan)
    _warn_if_it_may_not_fit(memory)
    if primary:
        write_tsv(the_plan, folder / SHARDING)
        write_json(folder / ENV, provenance.environment(the_plan.axis_sizes))
        folder.write_summary(_summary(cfg, Start(), plan=the_plan, memory=memory))
    return Decided(folder=folder, resolved=resolved, claim=claim, primary=primary,
                   process_count=jax.process_count(), devices=devices,
                   described=findings.described, plan=the_plan,
                   memory=memory,
                   batch_axis_size=the_plan.axis_sizes[cfg.mesh.batch_axis], started=started)


def _log_plan_notes(the_plan: Plan) -> None:
    """What the layout left whole, and large variables whole on every device: a line each."""
    for note in the_plan.notes:
        log.info("layout: %s", note)
    for warning in the_plan.warnings:
        log.warning("plan: %s", warning)


def _phase(started: float, what: str) -> None:
    """One line as a long phase begins, with the seconds since the run began: no stage is
    silent for long (loading a 7B model, compiling its step)."""
    log.info("%s  [%.0fs]", what, time.time() - started)


def _summary(cfg, start: Start, decided: Optional[Decided] = None,
             built: Optional[Built] = None, plan: Optional[Plan] = None,
             memory: Optional[mem.Memory] = None, **fields) -> dict:
    """summary.json (and W&B's summary) as far as the run has got: its name and start, its plan
    and memory estimate once decided, its data counts once built, then `fields`. The one place
    a summary is made, so every stage's summary.json has the same keys for the same facts."""
    plan = plan or (decided.plan if decided else None)
    memory = memory or (decided.memory if decided else None)
    summary = {"status": "running", "name": cfg.name}
    if start.step:
        summary["resumed_from_step"] = start.step
    if plan is not None:
        summary.update(total_params=plan.total_params, trainable_params=plan.trainable_params,
                       memory_per_device_estimate={**dataclasses.asdict(memory),
                                                   "total": memory.total})
    if built is not None:
        summary.update(_data_summary(cfg, built))
    return {**summary, **fields}


def _warn_if_it_may_not_fit(estimate: mem.Memory) -> None:
    """A warning, not an error: the estimate is approximate, and the run will say for sure."""
    device = mem.local_device_memory()
    problem = mem.fit_problem(estimate, device)
    log.info("memory per device (estimate): %s of %s", human_bytes(estimate.total),
             human_bytes(device.bytes) if device.bytes else "unknown")
    if problem:
        log.warning("%s (python -m runner.plan shows the breakdown)", problem)


def build(cfg, decided: Decided) -> Built:
    """Data, model and optimizer, inside the distribution (so every variable is born with its
    layout), then the plan checked against where JAX put every variable."""
    import random

    import numpy as np

    _phase(decided.started, "building the data pipeline")
    preprocessor, stream, eval_stream = build_data(cfg, decided.plan, decided.described)  # fast
    # Seeded again here: preparing a dataset (TFDS, the first time) draws from Python's random
    # generator, from which Keras's unseeded initializers (LoRA's A, random weights) take their
    # seeds; without this a run that prepares its data starts from other weights than one that
    # finds them prepared. Not keras.utils.set_random_seed: its tf.random.set_seed drops the
    # tf.data pipeline's SentencePiece resource.
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    _phase(decided.started, "building the model (random weights)" if model.random_weights(
        cfg.model) else f"loading the model ({cfg.model.preset})")
    causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision,
                                      preprocessor, cfg.train.remat, decided.described)
    reference = []
    if objective.needs_reference_copy(cfg.objective, cfg.lora):  # full fine-tuning DPO
        _phase(decided.started, "copying the base as DPO's frozen reference model")
        reference = reference_model.attach(causal_lm).variables
    optimizer = optim.build_optimizer(cfg.optimizer, stream.steps)
    objective.compile_for_training(causal_lm, optimizer, cfg.generate, cfg.train,
                                   decided.batch_axis_size, cfg.seed, cfg.objective,
                                   preprocessor.tokenizer.pad_token_id if preprocessor else 0)
    optimizer.build(causal_lm.trainable_variables)
    variables = tuple(causal_lm.backbone.variables + list(reference) + optimizer.variables)
    verify_placement(decided.plan, variables)
    return Built(causal_lm, preprocessor, stream, eval_stream, variables)


def build_data(cfg, the_plan: Plan, described: Described):
    """(preprocessor, training stream, eval stream or None). dataset=synthetic needs no
    tokenizer (and imports no TensorFlow) unless there are prompts to sample."""
    t = cfg.train
    if synthetic.is_synthetic(cfg.dataset):
        preprocessor = model.load_preprocessor(cfg.model, described) if cfg.generate.prompts \
            else None
        if preprocessor is not None:
            preprocessor.sequence_length = t.sequence_length
        stream = synthetic.build(cfg.dataset, the_plan.dimensions.vocabulary, t.batch_size,
                                 t.sequence_length, t.steps, cfg.seed)
        return preprocessor, stream, None
    preprocessor = model.load_preprocessor(cfg.model, described)
    preprocessor.sequence_length = t.sequence_length
    stream = data.build(cfg.dataset, preprocessor, t.batch_size, t.sequence_length, t.epochs,
                        t.steps, cfg.seed)
    eval_stream = data.build_eval(cfg.dataset, preprocessor, t.batch_size, t.sequence_length,
                                  t.eval_steps) if cfg.dataset.eval_split else None
    return preprocessor, stream, eval_stream


def resume(cfg, decided: Decided, built: Built) -> Start:
    """Restore the newest of the folder's checkpoints that can be read, trying each for real
    (into the model's own shardings, every process its shards); one that cannot is set aside
    with a warning and the one before it tried. Process 0 then drops the records past the
    start (they are logged again, identically) and says where the run starts."""
    folder, claim = decided.folder, decided.claim
    start = Start()
    if claim.state == "resume":
        start = _restore_newest_good(decided, built, cfg.train.resume == "or_restart")
        if start.checkpoint is not None:
            log.info("%s holds this run, cut at step %d: resuming from %s", folder.path,
                     start.step, start.checkpoint.path)
    if decided.primary:
        folder.truncate_after(start.step)
        folder.write_summary(_summary(cfg, start, decided, built))
    return start


def _data_summary(cfg, built: Built) -> dict:
    """Per split: examples read, how many were longer than train.sequence_length, the tokens
    cut from them or how many were dropped (runner.data.Counts)."""
    found = {cfg.dataset.split: built.stream.counts}
    if built.eval_stream is not None:
        found[cfg.dataset.eval_split] = built.eval_stream.counts
    return {"data": {split: {**dataclasses.asdict(c), "kept": c.kept}
                     for split, c in found.items() if c is not None}}


def _restore_newest_good(decided: Decided, built: Built, or_restart: bool) -> Start:
    """Try the checkpoints newest first; set aside the unreadable ones newer than the first
    that restores. None restoring is a UserError, or (or_restart) a start from step 0 with all
    of them set aside."""
    lm, folder = built.causal_lm, decided.folder
    _build_state(lm, built)  # the state fit would build, to restore into
    unreadable = []
    for checkpoint in decided.claim.checkpoints:
        problem, meta = _restore(lm, checkpoint)
        if problem is None:
            _set_aside(decided, unreadable, f"resuming from {checkpoint.path}")
            return Start(checkpoint.step, checkpoint, meta,
                         tuple(v.value for v in lm.metrics_variables))
        unreadable.append((checkpoint, problem))
    reasons = "; ".join(f"{c.path.name}: {why}" for c, why in unreadable)
    if or_restart:
        _set_aside(decided, unreadable, "none restores: starting over from step 0 "
                                        "(train.resume=or_restart)")
        return Start()
    raise UserError(f"{folder / CHECKPOINTS}: none of its checkpoints can be restored "
                    f"({reasons}); to start this run over from step 0 instead, run again with "
                    f"train.resume=or_restart (it sets them aside in {SET_ASIDE}/, never "
                    "deletes them, and resumes as usual once a checkpoint restores), or choose "
                    "a new folder")


def _build_state(lm, built: Built) -> None:
    """What Keras's fit builds before its first step (the compiled metrics' variables), to
    restore into, from the stream's first batch with the model's own inputs only: a packed
    batch's segment ids and positions are the step's (runner/documents.py). Only a resumed run
    calls it, before fit (as it always has): reading the stream once more in fit changed the
    shuffle order fit sees (each new iterator over a tf.data shuffle reshuffles)."""
    preprocessor, lm.preprocessor = lm.preprocessor, None
    x, y, w = next(iter(built.stream.from_step(0)))
    lm._symbolic_build(data_batch=(documents.split(x)[0], y, w))
    lm.preprocessor = preprocessor
    # fit's own _symbolic_build looks at every layer Keras tracks, the preprocessor too (still
    # tracked while lm.preprocessor is None). Where the pipeline only used its tokenizer
    # (format=prompt_response, chat, preference) it was never called, so never built, and fit
    # would read one more batch to build it: one more iterator over the shuffled stream, whose
    # order is then not the uninterrupted run's. Its build makes its packer; it has no weights.
    if preprocessor is not None and not preprocessor.built:
        preprocessor.build(None)  # makes its packer, itself a layer never called
        for layer in preprocessor._flatten_layers():
            if not layer.built:
                layer.build(None)


def _set_aside(decided: Decided, unreadable: list, then: str) -> None:
    for bad, why in unreadable if decided.primary else ():
        log.warning("%s cannot be restored (%s): set aside as %s; %s", bad.path, why,
                    checkpoints.set_aside(decided.folder, bad), then)


def _restore(lm, checkpoint) -> tuple[Optional[str], Optional[dict]]:
    """(None, its meta) when the checkpoint restored into the model in every process, else
    (why not, None). Every process restores its own shards; they agree on the outcome, so all
    try the one before together. A failure that is not damage (memory, permissions: see
    checkpoints.damage), or a checkpoint of another model (Mismatch), is a UserError: setting
    aside a good checkpoint would throw its steps away."""
    problem, meta, other = None, None, None
    try:
        meta = checkpoints.restore(lm, checkpoint)
    except checkpoints.Mismatch:
        raise
    except Exception as exc:  # noqa: BLE001 - Orbax and TensorStore raise plain Exception
        _quiet_failed_reads()
        problem = checkpoints.damage(exc)
        if problem is None:
            other = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else \
                type(exc).__name__
    outcomes = gather_ints(0 if meta is not None else 2 if other else 1)  # every process's
    if max(outcomes) == 2:
        raise UserError(f"{checkpoint.path} could not be restored ("
                        f"{other or 'in another process: see its log'}); that is not a damaged "
                        "file, so nothing was set aside: fix the cause (memory, permissions, "
                        "the file system) and run the same command again")
    if max(outcomes) == 1 and problem is None:
        problem = "another process could not read its shards"
    return problem, meta if problem is None else None


def _quiet_failed_reads() -> None:
    """A failed restore leaves TensorStore reads in flight; as they end (seconds later, on its
    own threads) they report to Python's unraisable hook, which prints a stack trace per read
    ("Event loop is closed", "Encountered error while reading array"). The warning or error
    line already said what failed: from here on, those two reports are dropped, others kept."""
    import atexit
    import sys

    previous = sys.unraisablehook
    if getattr(previous, "runner_quiet", False):
        return
    last = [time.monotonic()]

    def hook(unraisable):
        text = str(unraisable.exc_value)
        if text == "Event loop is closed" or text.startswith("Encountered error while reading"):
            last[0] = time.monotonic()
        else:
            previous(unraisable)

    def settle():  # at exit the hook is gone: let the reads end while it is still here
        began = time.monotonic()
        while time.monotonic() - last[0] < 0.5 and time.monotonic() - began < 5:
            time.sleep(0.05)
    hook.runner_quiet = True
    sys.unraisablehook = hook
    atexit.register(settle)


def open_tracker(cfg, decided: Decided, start: Start, run_name, group) -> Tracker:
    name = run_name or f"{cfg.name}-{decided.folder.path.name}"
    if start.step:
        name = f"{name} (resumed at step {start.step})"
    tracker = Tracker(cfg.tracking, decided.folder, decided.resolved, name=name, group=group,
                      write=decided.primary)
    tracker.summary(_summary(cfg, start, decided))
    tracker.table("sharding", TSV_COLUMNS, tsv_rows(decided.plan))
    return tracker


def fit(cfg, decided: Decided, built: Built, start: Start, tracker: Tracker,
        stops: StopRequests, prompts: list, before: list) -> Fitted:
    """Train from `start` (logging, evaluating, checkpointing on the way; stopping with a
    checkpoint when a stop signal is agreed), then sample the prompts again."""
    plan, lm, stream = decided.plan, built.causal_lm, built.stream
    log.info("params: %s total, %s trainable; mesh %s; %d steps", f"{plan.total_params:,}",
             f"{plan.trainable_params:,}", plan.axis_sizes, stream.steps)
    # Model FLOPs per step: the achieved FLOP/s is logged live; MFU divides it by this machine's
    # peak matmul FLOP/s, measured after training (measuring first slowed the steps after it).
    flops_per_step = flops.flops_per_token(
        plan.dimensions, plan.total_params, plan.trainable_params, cfg.train.sequence_length,
        objective.has_reference(cfg.objective)) * _tokens_per_step(cfg) if plan.dimensions else 0.0
    logger = StepLogger(tracker, cfg.optimizer, cfg.train.log_every, stream.steps,
                        start.step, flops_per_step)
    stateful = {"logger": logger}
    if built.eval_stream is not None:
        stateful["evaluator"] = Evaluator(tracker, built.eval_stream,
                                          cfg.train.eval_every or stream.steps, stream.steps,
                                          start.step)
    saver = Checkpointer(
        checkpoints.Saver(decided.folder), cfg.train.checkpoint_every,
        stream.steps, start.step, stateful, resumed=start if start.checkpoint else None,
        on_restored=lambda m: verify_placement(plan, built.variables),
        keep_final=cfg.lora.rank == 0,
        should_stop=lambda step: stops.agreed(decided.process_count))
    stops.stop_now(decided.process_count, start.step)  # asked while sampling or restoring
    lm.preprocessor = None  # batches arrive preprocessed; fit must not redo it
    began = time.time()
    # A resumed run replays the stream to where the checkpoint was taken. The synthetic stream
    # goes to Keras's own fit: keras-hub's wrapper around it only adds preprocessing (there is
    # none to add) and takes tf.data or grain datasets, not a generator of NumPy batches.
    import keras

    fit_method = lm.fit if stream.replay is None else functools.partial(keras.Model.fit, lm)
    if stream.steps > start.step:
        _phase(decided.started, f"training: compiling the train step, then steps "
                                f"{start.step + 1}-{stream.steps}")
        fit_method(stream.from_step(start.step), epochs=1,
                   steps_per_epoch=stream.steps - start.step,
                   callbacks=[*stateful.values(), saver], verbose=0, shuffle=False)
    else:  # cut after its final checkpoint (restored by resume()): nothing left to train
        saver.set_model(lm)
        saver.on_epoch_begin(0)
    if saver.stopped is not None:
        raise Stopped(*saver.stopped)
    if stops.requested is not None:
        log.warning("%s came after the last step: finishing the run (samples, adapter, "
                    "summary) first", stops.requested.name)
    train_seconds = time.time() - began
    peak = flops.peak_matmul_flops() if flops_per_step else 0.0
    lm.preprocessor = built.preprocessor
    if prompts:
        _phase(decided.started, f"sampling {len(prompts)} prompts after training")
    after = generation.generate(lm, prompts, cfg.generate.max_length, decided.batch_axis_size)
    return Fitted(logger, stateful.get("evaluator"), tuple(zip(prompts, before, after)),
                  train_seconds, flops_per_step, peak)


def _prompts(cfg, process_count: int) -> list[str]:
    prompts = list(cfg.generate.prompts)
    if prompts and process_count > 1:
        log.warning("samples skipped: keras-hub's generate() cannot fetch token arrays spread "
                    "over %d processes; sample from the saved adapter on one host with "
                    "python -m runner.generate RUN_DIR", process_count)
        return []
    return prompts


def _tokens_per_step(cfg) -> int:
    return objective.rows_per_step(cfg.train, cfg.objective) * cfg.train.sequence_length


def finish(cfg, decided: Decided, built: Built, start: Start, fitted: Fitted,
           tracker: Tracker) -> dict:
    """What the run leaves: samples, the adapter (and a merged preset if asked), the summary."""
    folder = decided.folder
    if decided.primary and fitted.samples:
        folder.write_samples(fitted.samples)
        tracker.table("samples", ["prompt", "before", "after"], [list(s) for s in fitted.samples])
    for prompt, before, after in fitted.samples:
        log.info("sample %r\n  before: %r\n  after:  %r", prompt, before, after)
    summary = _summary(cfg, start, decided, built, tokens_per_step=_tokens_per_step(cfg),
                       flops_per_step=fitted.flops_per_step,
                       **({"peak_flops": fitted.peak_flops} if fitted.flops_per_step else {}),
                       **results(fitted, built.stream, decided.started),
                       **save_artifacts(cfg, decided, built), status="finished")
    tracker.summary(summary)
    summary["wandb_dir"] = tracker.wandb_dir
    if decided.primary:
        folder.write_summary(summary)
    log.info("finished: loss %s -> %s in %.0fs; outputs in %s", summary["first_loss"],
             summary["final_loss"], summary["wall_time_s"], folder.path)
    return summary


def results(fitted: Fitted, stream: data.Stream, started: float) -> dict:
    logger, peak = fitted.logger, fitted.peak_flops
    losses, tps, times = logger.losses, logger.tokens_per_s, logger.step_times
    steady = sum(times) / len(times) if times else math.nan
    evals = [loss for _, loss in fitted.evaluator.history] if fitted.evaluator else []
    extra = {"final_eval_loss": evals[-1], "best_eval_loss": min(evals)} if evals else {}
    return {**extra,
            "steps": logger.steps,
            "epochs": logger.steps / stream.steps_per_epoch,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "best_loss": min(losses) if losses else None,
            "tokens_per_s": sum(tps) / len(tps) if tps else math.nan,
            "step_time_s": steady,
            "model_flops_per_s": logger.flops_per_step / steady if times else math.nan,
            "mfu": logger.flops_per_step / steady / peak if peak and times else math.nan,
            "first_step_at": logger.first_step_at,
            "train_time_s": fitted.train_seconds,
            **mem.measured_peak(),
            "wall_time_s": time.time() - started}


def save_artifacts(cfg, decided: Decided, built: Built) -> dict:
    """The adapter (with the logits a reload must reproduce) and, if asked, a merged preset.
    Their preconditions were checked before training (runner/checks.py)."""
    saved = {}
    lm = built.causal_lm
    if model.random_weights(cfg.model):
        log.info("no adapter saved: model.weights=random, and a random base is not saved")
        return saved
    if cfg.lora.rank > 0 and cfg.train.save_adapter:
        probe = None  # the logits a reload must reproduce; not fetchable across processes
        if decided.process_count == 1:
            probe = generation.probe_logits(lm, built.preprocessor,
                                            list(cfg.generate.prompts) or ["The"],
                                            decided.batch_axis_size)
        if not decided.primary:
            return saved
        _phase(decided.started, "saving the adapter")
        saved["adapter"] = str(adapters.save(lm, decided.folder, probe))
        log.info("adapter saved: %s (reload: python -m runner.generate %s)", saved["adapter"],
                 decided.folder.path)
    if cfg.train.save_merged_preset:
        _phase(decided.started, "saving the merged preset")
        base = model.build_causal_lm(cfg.model, None, cfg.quant, cfg.train.precision,
                                     described=decided.described)
        out = adapters.save_merged_preset(lm, base, decided.folder / MERGED,
                                          {"preset": cfg.model.preset, "rank": cfg.lora.rank,
                                           "alpha": model.lora_alpha_of(cfg.lora)})
        saved["merged_preset"] = str(out)
    if cfg.train.export_hf and decided.primary:
        _phase(decided.started, "exporting Hugging Face folders")
        saved["export"] = write(decided.folder, Source(cfg, decided.described, lm))
        log.info("exported: %s", ", ".join(f"{k} {v}" for k, v in saved["export"].items()))
    return saved

"""The check stage: everything that can be checked with no weights, before any is loaded.

A training run calls it right after claiming its folder and stops at the first problem;
`python -m runner.plan` calls it too and lists every problem beside the sharding plan's. What it
covers: every value in its domain (runner.config.validate), combinations Keras cannot do, the
optimizer group, the preset (a checkpoint the runner can read, with its tokenizer files), the
dataset (it exists or can be had, its splits, its features against the text field and
templates), what the run must leave at the end (a merged preset or a Hugging Face export needs
an unquantized base and one process), and, for a run, the tracking mode. The sharding plan
(runner/plan/) adds its own checks: rules, divisibility, batch axis, memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from runner import config, mesh, model, optim
from runner.datasets import synthetic
from runner.datasets.opening import label, open_dataset
from runner.errors import UserError
from runner.formats import dataset_problems
from runner.hf import files
from runner.hf.folder import read_config, tokenizer_problem
from runner.model import random_weights
from runner.presets import TRANSFORMERS, Described, describe, resolve_preset
from runner.tracking import preflight


@dataclass(frozen=True)
class Findings:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked here, and why
    # The preset described once (runner.presets.describe) for every later stage; None when it
    # cannot be (a problem says why).
    described: Optional[Described] = None

    def raise_first(self) -> None:
        if self.problems:
            more = len(self.problems) - 1
            suffix = f" (and {more} more problem{'s' * (more > 1)}; see `python -m runner.plan`)" \
                if more else ""
            raise UserError(self.problems[0] + suffix)


def _collect(found: list[str], check, *args) -> None:
    try:
        check(*args)
    except UserError as exc:
        found.append(str(exc))


def run_checks(cfg, n_devices: int, process_count: int = 1,
               for_training: bool = True) -> Findings:
    """Every check that needs no weights, for a run on n_devices. for_training=False (planning):
    a dataset that is not prepared here is a note, not a problem, and nothing is downloaded;
    tracking is not checked."""
    problems: list[str] = []
    _collect(problems, config.validate, cfg)
    try:
        mesh.axis_sizes(cfg.mesh, n_devices)  # a mesh these devices cannot make: one line
    except UserError as exc:
        problems.append(str(exc))
    _collect(problems, model.check_supported, cfg.quant, cfg.lora)
    _collect(problems, optim.check, cfg.optimizer)
    _collect(problems, _step_shape, cfg.train)
    problems += objective_problems(cfg.objective, cfg.dataset)
    described = None
    try:
        described = describe(cfg.model)
        _preset(cfg.model, for_training, described)
    except UserError as exc:
        problems.append(str(exc))
    _collect(problems, _artifacts, cfg, process_count)
    if for_training:
        _collect(problems, preflight, cfg.tracking)
    notes: list[str] = []

    if synthetic.is_synthetic(cfg.dataset):
        problems += synthetic.problems(cfg.dataset, cfg.train.steps, cfg.generate.prompts)
        return Findings(problems, notes, described)
    try:
        opened = open_dataset(cfg.dataset, download=for_training)
    except UserError as exc:
        problems.append(str(exc))
    else:
        if opened is None:
            notes.append(f"dataset {label(cfg.dataset)} is not prepared here, so its splits "
                         "and fields were not checked")
        else:
            problems += dataset_problems(cfg.dataset, opened,
                                         described.family if described else None)
    return Findings(problems, notes, described)


def objective_problems(objective_cfg, dataset_cfg) -> list[str]:
    """A preference objective reads preference pairs and nothing else reads them; each
    objective's keys are its own."""
    name, fmt = str(objective_cfg.name), str(dataset_cfg.format)
    preference = name != "sft"
    if synthetic.is_synthetic(dataset_cfg) and preference:
        return [f"objective={name} needs preference pairs; dataset=synthetic has none: choose a "
                "dataset with prompt/chosen/rejected records (dataset=tiny_preferences)"]
    if preference and fmt != "preference":
        return [f"objective={name} trains on preference pairs, but dataset.format={fmt}; set "
                "dataset.format=preference on data with prompt/chosen/rejected records "
                "(dataset=tiny_preferences ships some), or use objective=sft"]
    if fmt == "preference" and not preference:
        return ["dataset.format=preference holds pairs that objective=sft cannot train on; choose "
                "objective=dpo, orpo or simpo"]
    found = [f"objective.{key}={value} is not used by objective={name}; leave it at its default "
             f"({default}) or choose an objective that uses it"
             for key, value, default, users in (
                 ("loss_type", objective_cfg.loss_type, "sigmoid", ("dpo",)),
                 ("label_smoothing", objective_cfg.label_smoothing, 0.0, ("dpo", "simpo")),
                 ("gamma", objective_cfg.gamma, 0.0, ("simpo",)))
             if preference and name not in users and str(value) != str(default)]
    if preference and dataset_cfg.packing:
        found.append(f"dataset.packing=true with objective={name}: a pair's two rows are compared "
                     "whole, so pairs are not packed; set dataset.packing=false")
    return found


def _step_shape(train_cfg) -> None:
    """The step's split of the batch into micro-batches and of the sequence into loss tiles
    (runner/step.py) must be exact: a remainder would be dropped or padded into the loss."""
    n, batch = train_cfg.gradient_accumulation_steps, train_cfg.batch_size
    if batch % n:
        raise UserError(f"train.gradient_accumulation_steps={n} does not divide "
                        f"train.batch_size={batch}; use a batch size that is a multiple of {n}")
    tiles, length = train_cfg.loss_tiles, train_cfg.sequence_length
    if str(tiles) != "auto" and length % int(tiles):
        raise UserError(f"train.loss_tiles={tiles} does not divide train.sequence_length="
                        f"{length}; use a divisor of {length} or train.loss_tiles=auto")


def _preset(model_cfg, for_training: bool, described: Optional[Described] = None) -> None:
    """The preset is a checkpoint the runner can read (runner.presets.describe), and a Hugging
    Face folder has its tokenizer files. A plan may describe it from its model file; a run
    needs the preset itself here."""
    from pathlib import Path

    described = described or describe(model_cfg)
    random = random_weights(model_cfg)  # the architecture is enough (and a tokenizer)
    if for_training and described.location is None and not random:
        resolve_preset(model_cfg.preset)  # raises why it cannot be had here
    if described.kind == TRANSFORMERS and Path(described.location).is_dir():
        folder = Path(described.location)
        problem = tokenizer_problem(folder, described.family)
        if problem:
            raise UserError(problem)
        if not random:  # the weight files: present, whole, and what config.json says
            files.check(folder, described.family, read_config(folder), described.numbers)


def _artifacts(cfg, process_count: int) -> None:
    """What the run must write at its end, checked before it starts rather than after it trains."""
    if random_weights(cfg.model):
        for wanted in ("export_hf", "save_merged_preset"):
            if cfg.train[wanted]:
                raise UserError(f"train.{wanted}=true with model.weights=random: the random "
                                f"base is not saved, so it cannot be exported or merged; set "
                                f"train.{wanted}=false")
    if cfg.train.export_hf:
        _export_preconditions(cfg, process_count)
    if not cfg.train.save_merged_preset:
        return
    if cfg.lora.rank == 0 or cfg.quant.mode != "none":
        raise UserError("train.save_merged_preset needs LoRA on a base that is not "
                        "quantized (lora.rank > 0, quant=none)")
    if process_count > 1:
        raise UserError("train.save_merged_preset is not supported in a multi-process run; "
                        "merge later from the adapter (python -m runner.generate) or run with "
                        "one process")


def _export_preconditions(cfg, process_count: int) -> None:
    import importlib.util

    if cfg.quant.mode in ("int8", "int4"):
        raise UserError(f"train.export_hf=true with quant={cfg.quant.mode}: export needs the "
                        "full-precision base (or NF4's, which transformers quantizes alike); use "
                        "quant=none or nf4, or train.export_hf=false")
    if process_count > 1:
        raise UserError("train.export_hf=true is not supported in a multi-process run; export "
                        "afterwards with python -m runner.export RUN_DIR")
    if importlib.util.find_spec("transformers") is None:
        raise UserError("train.export_hf=true needs transformers: pip install -e '.[export]'")

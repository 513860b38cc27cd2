"""A finished run folder -> RUN_DIR/export/{merged,adapter,base}: the trained model as a
transformers folder, its LoRA adapter as a PEFT folder, and (for a keras-hub base, which Hugging
Face tools cannot read) the untouched base the adapter applies to."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from runner import adapters, checkpoints, model
from runner.errors import UserError
from runner.export import folders, peft_adapter, weights
from runner.export.hf_config import hf_config
from runner.hf.folder import read_config
from runner.hf.ports import converter_ports
from runner.presets import TRANSFORMERS, Described, describe
from runner.rundir import EXPORT, EXPORT_ADAPTER, EXPORT_BASE, EXPORT_MERGED, RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    cfg: object
    described: Described  # the run's base, described once
    causal_lm: object  # trained: the adapter loaded, or a full fine-tune's final weights


def _finished_run(folder: RunDir):
    cfg = folder.config()
    status = folder.summary().get("status")
    if status != "finished":
        raise UserError(f"{folder.path} is a run that did not finish (status {status}); "
                        "finish it (run the same command again to resume) before exporting")
    if cfg.quant.mode in ("int8", "int4"):
        raise UserError(f"{folder.path} trained on an {cfg.quant.mode} base; export needs "
                        "the full-precision base (or NF4's, which transformers quantizes alike): "
                        "train with quant=none or quant=nf4")
    return cfg


def load_source(folder: RunDir) -> Source:
    """The run's base with its trained weights, on this host (no distribution); an NF4 base
    quantized again from the preset, as the run quantized it."""
    cfg = _finished_run(folder)
    described = describe(cfg.model)
    quant = cfg.quant if model.is_nf4(cfg.quant) else None
    lm = model.build_causal_lm(cfg.model, cfg.lora, quant, "float32", described=described)
    if cfg.lora.rank > 0:
        adapters.load(lm, folder)
        return Source(cfg, described, lm)
    last = checkpoints.latest(folder)
    steps = folder.summary().get("steps")
    if last is None or last.step != steps:
        raise UserError(f"{folder.path} trained every weight but kept no checkpoint of its last "
                        f"step ({steps}); export at the end of the run instead (export=true) or "
                        "set train.checkpoint_every to a divisor of the steps")
    values = checkpoints.trainable_values(last)
    for variable in lm.backbone.variables:
        if variable.path in values:
            variable.assign(values[variable.path])
    return Source(cfg, described, lm)


def _unquantized(source: Source):
    """The backbone whose weights the adapter applies to: the run's own, or for an NF4 run the
    preset's full-precision one (transformers quantizes it again as the run did; the NF4 codes
    cannot give the original values back)."""
    if not model.is_nf4(source.cfg.quant):
        return source.causal_lm.backbone
    return model.build_causal_lm(source.cfg.model, None, None, "float32",
                                 described=source.described).backbone


def _hf_config(source: Source) -> dict:
    if source.described.kind == TRANSFORMERS:  # the user's own config.json describes it best
        config = read_config(Path(source.described.location))
        config.setdefault("architectures", _architectures(config["model_type"]))
        return {**config, "torch_dtype": "float32", "dtype": "float32"}
    return hf_config(source.described.family, source.causal_lm.backbone)


def _architectures(model_type: str) -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]]


def _write_model(final: Path, source: Source, config: dict, tensors: dict) -> Path:
    out = folders.staged(final)
    folders.write_json(out / "config.json", config)
    folders.write_safetensors(out / "model.safetensors", tensors)
    if source.described.kind == TRANSFORMERS:
        folders.copy_tokenizer(Path(source.described.location), out)
    else:
        folders.export_tokenizer(source.causal_lm.preprocessor.tokenizer, out)
    return folders.publish(out, final)


def _write_adapter(final: Path, source: Source, ports, base: str) -> Path:
    tensors, fields = peft_adapter.adapter(source.causal_lm.backbone, ports)
    out = folders.staged(final)
    folders.write_json(out / "adapter_config.json", {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base,
        "lora_dropout": float(source.cfg.lora.dropout), "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "use_rslora": False, "use_dora": False, **fields})
    folders.write_safetensors(out / "adapter_model.safetensors", tensors)
    return folders.publish(out, final)


def export(folder: RunDir) -> dict:
    """Write a finished run's export folders; returns {kind: path}."""
    log.info("loading the run's model and its trained weights from %s", folder.path)
    return write(folder, load_source(folder))


def write(folder: RunDir, source: Source) -> dict:
    """RUN_DIR/export/{merged, adapter, base} for `source`; returns {kind: path}."""
    root = folder / EXPORT
    config = _hf_config(source)
    ports = converter_ports(source.described.family, source.described.numbers, config)
    backbone = source.causal_lm.backbone
    log.info("writing %s (the trained model, LoRA merged in%s)", root / EXPORT_MERGED,
             " to the NF4 base dequantized, as PEFT's merge_and_unload" if model.is_nf4(
                 source.cfg.quant) else "")
    written = {"merged": _write_model(root / EXPORT_MERGED, source, config,
                                      weights.state_dict(backbone, ports))}
    if source.cfg.lora.rank > 0:
        if source.described.kind == TRANSFORMERS:
            base = source.described.location
        else:
            log.info("writing %s (the base the adapter applies to)", root / EXPORT_BASE)
            base_tensors = weights.state_dict(_unquantized(source), ports, merged=False)
            base = str(_write_model(root / EXPORT_BASE, source, config, base_tensors))
            written["base"] = base
        log.info("writing %s (the LoRA adapter, PEFT's format)", root / EXPORT_ADAPTER)
        written["adapter"] = _write_adapter(root / EXPORT_ADAPTER, source, ports, base)
    return {kind: str(path) for kind, path in written.items()}

"""The weight files of a Hugging Face checkpoint folder, checked before any weight loads.

Folders as users have them: a download cut short (a shard of a sharded checkpoint missing, a
file truncated), a damaged file, PyTorch `.bin` weights only, or a config.json from another
model than the weights. Each ends as one line naming the file and the fix, in the check stage,
in seconds: only the safetensors headers are read (a JSON table of every tensor's dtype, shape
and byte range), never the tensors.

`.bin`-only folders are refused with the one command that converts them (transformers'
save_pretrained writes safetensors): reading them would need torch and unpickling, which the
runner's base install has neither of, and keras-hub's converters read safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path

from runner.errors import UserError
from runner.hf.ports import converter_ports
from runner.hf.shapes import tensor_shapes

SAFETENSORS = "model.safetensors"
INDEX = "model.safetensors.index.json"  # a sharded checkpoint: tensor -> shard file
TORCH_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _again(folder: Path) -> str:
    return f"download {folder} again (or the missing files into it)"


def weight_files(folder: Path) -> dict[str, Path]:
    """{file name: path} of the safetensors files keras-hub's loader reads: the shards the index
    names, or model.safetensors."""
    index = folder / INDEX
    if index.is_file():
        shards = sorted(set(_weight_map(index).values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise UserError(f"{folder / missing[0]} is missing: {INDEX} names {len(shards)} "
                            f"weight files and {len(missing)} of them are not here (a download "
                            f"cut short?); {_again(folder)}")
        return {s: folder / s for s in shards}
    if (folder / SAFETENSORS).is_file():
        return {SAFETENSORS: folder / SAFETENSORS}
    torch_files = [n for n in TORCH_WEIGHTS if (folder / n).is_file()]
    if torch_files:
        raise UserError(
            f"model.preset={folder} holds PyTorch weights only ({torch_files[0]}); the runner "
            "reads safetensors: convert them once where transformers and torch are installed: "
            f"python -c \"from transformers import AutoModelForCausalLM as M; "
            f"M.from_pretrained('{folder}').save_pretrained('{folder}')\"")
    raise UserError(f"model.preset={folder} holds no weights (neither {SAFETENSORS} nor {INDEX});"
                    f" {_again(folder)}")


def _weight_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError("no tensors in its weight_map")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = "no weight_map" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:80]
        raise UserError(f"{index} cannot be read ({reason}); the file is damaged: "
                        f"{_again(index.parent)}") from None
    return weight_map


def read_header(path: Path) -> dict[str, tuple]:
    """{tensor name: shape} from a safetensors file's header (safetensors' own reader, which
    maps the file and reads no tensor); a UserError for a file that is not one, or that ends
    before the tensors its header promises."""
    from safetensors import SafetensorError, safe_open

    damaged = f"the file is damaged: {_again(path.parent)}"
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except SafetensorError as exc:
        reason = str(exc).strip().splitlines()[0][:100]
        if "incomplete metadata" in reason:  # the tensors' bytes end before the header's
            raise UserError(f"{path}: truncated ({path.stat().st_size:,} bytes, fewer than its "
                            f"header describes: a download cut short, or a full disk?); "
                            f"{damaged}") from None
        raise UserError(f"{path}: not a readable safetensors file ({reason}); {damaged}") \
            from None


def _resolve(key: str, names) -> str | None:
    """The file's name for a tensor the converter asks for, as keras-hub's loader finds it:
    the name itself, or one that ends with it (a prefix such as "language_model.")."""
    if key in names:
        return key
    return next((n for n in names if n.endswith(key)), None)


def _architecture(hf_config: dict) -> str:
    fields = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "vocab_size")
    return ", ".join(f"{f}={hf_config[f]}" for f in fields if hf_config.get(f) is not None)


def check(folder: Path, family: str, hf_config: dict, numbers: dict) -> None:
    """Every tensor keras-hub's converter will read is in the folder's files (the ones the index
    says), whole, with the shape config.json gives it; else one UserError line."""
    files = weight_files(folder)
    headers = {name: read_header(path) for name, path in files.items()}
    index = folder / INDEX
    placed = _weight_map(index) if index.is_file() else {
        tensor: SAFETENSORS for tensor in headers[SAFETENSORS]}
    expected = tensor_shapes(hf_config)
    for port in converter_ports(family, numbers, hf_config):
        name = _resolve(port.hf_key, placed)
        if name is None:
            raise UserError(
                f"{folder}: no weight file holds {port.hf_key}, which config.json's "
                f"{hf_config.get('model_type')} ({_architecture(hf_config)}) needs; config.json "
                "and the weights disagree (from two different models?): fix config.json or "
                f"{_again(folder)}")
        shard = placed[name]
        if name not in headers[shard]:
            raise UserError(f"{folder / shard} does not hold {name}, which {INDEX} places there;"
                            f" the folder is damaged: {_again(folder)}")
        if headers[shard][name] != expected[port.hf_key]:
            raise UserError(
                f"{folder / shard}: {name} has shape {list(headers[shard][name])} but config.json "
                f"({_architecture(hf_config)}) gives it {list(expected[port.hf_key])}; config.json "
                "and the weights disagree (from two different models?): fix config.json or "
                f"{_again(folder)}")

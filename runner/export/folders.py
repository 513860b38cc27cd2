"""Writing one Hugging Face folder: weights, config, tokenizer, into a staging folder renamed
into place at the end, so a cut export never leaves a folder that looks complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runner.errors import UserError

# What a Hugging Face checkpoint folder may hold besides weights and config.json: copied as is
# from a Hugging Face base (they describe the tokenizer and generation, which training keeps).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                   "tekken.json", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")


def staged(final: Path) -> Path:
    staging = final.with_name(f".{final.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, final: Path) -> Path:
    shutil.rmtree(final, ignore_errors=True)  # an earlier export of the same run, replaced whole
    staging.rename(final)
    return final


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_safetensors(path: Path, tensors: dict) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata={"format": "pt"})  # "pt": transformers' loaders


def copy_tokenizer(source: Path, out: Path) -> list[str]:
    copied = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copy2(source / name, out / name)
    return copied


def export_tokenizer(tokenizer, out: Path) -> list[str]:
    """keras-hub's own tokenizer export (tokenizer.model / tokenizer.json / vocab.json and
    tokenizer_config.json) for a keras-hub base."""
    from keras_hub.src.utils.transformers.export.hf_exporter import export_tokenizer as upstream

    before = set(out.iterdir())
    try:
        upstream(tokenizer, str(out))
    except ValueError as exc:
        raise UserError(f"the tokenizer cannot be exported ({exc}); train from a Hugging Face "
                        "base (model.preset=<its folder>), whose tokenizer files are copied"
                        ) from None
    return sorted(p.name for p in set(out.iterdir()) - before)

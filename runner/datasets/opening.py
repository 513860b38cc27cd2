"""dataset config -> an opened TFDS builder, whichever source the data comes from:

- dataset.files (and dataset.eval_files): the user's JSONL, CSV, Parquet or text files;
- dataset.name=hf://OWNER/NAME: a Hugging Face dataset, read with `datasets`;
- dataset.name=<a TFDS name>: the TFDS catalog or a dataset the project ships.

The first two are prepared by runner.datasets.user_data, which also scans them (their fields,
what each record lacks, chat roles), so the check stage can name a file and line.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from runner.datasets import SHIPPED, hub, user_data
from runner.errors import UserError
from runner.network import reachable

# TFDS fetches prepared datasets from Google Cloud Storage first; if that host is unreachable,
# a download would retry for minutes, so it is checked first.
DOWNLOAD_PROBE_HOST = "storage.googleapis.com"


@dataclass(frozen=True)
class Opened:
    builder: object  # a prepared TFDS builder
    label: str  # names the data in messages: "tiny_reviews", "files data/*.jsonl"
    scan: Optional[object] = None  # runner.datasets.user_data.Scan for a user's data


def label(dataset_cfg) -> str:
    return f"files {dataset_cfg.files}" if dataset_cfg.files else dataset_cfg.name


def open_dataset(dataset_cfg, download: bool = True) -> Optional[Opened]:
    """The dataset, prepared (the user's files and shipped datasets are prepared here, others
    downloaded when dataset.download allows and the host answers). download=False (planning):
    None when a catalog dataset is not prepared here, instead of fetching it."""
    import tensorflow_datasets as tfds

    tfds.display_progress_bar(False)
    if dataset_cfg.files or hub.is_hub(dataset_cfg.name):
        if dataset_cfg.files:
            source = user_data.files_source(dataset_cfg)
        else:
            splits = [hub.base_split(s) for s in (dataset_cfg.split, dataset_cfg.eval_split) if s]
            source = hub.hub_source(dataset_cfg, list(dict.fromkeys(splits)),
                                    cache_only=not download)
            if source is None:
                return None
        prepared = user_data.prepare(source, dataset_cfg.data_dir)
        return Opened(prepared.builder, source.label, prepared.scan)
    builder = _catalog_builder(dataset_cfg, download)
    return Opened(builder, dataset_cfg.name) if builder is not None else None


def _catalog_builder(dataset_cfg, download: bool):
    import tensorflow_datasets as tfds

    if dataset_cfg.name in SHIPPED:
        importlib.import_module(SHIPPED[dataset_cfg.name])  # registers the builder with TFDS
    data_dir = str(Path(dataset_cfg.data_dir).expanduser()) if dataset_cfg.data_dir else None
    if dataset_cfg.name.startswith("huggingface:") and not reachable("huggingface.co"):
        # TFDS's huggingface namespace asks the hub for the dataset's metadata even when a
        # prepared copy exists, and retries for minutes offline.
        if not download:
            return None
        raise UserError(f"dataset.name={dataset_cfg.name} is read through huggingface.co, which "
                        "cannot be reached (offline?); use its stand-in (debug=smoke) or run "
                        "where the hub is reachable")
    try:
        builder = tfds.builder(dataset_cfg.name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"dataset.name={dataset_cfg.name} is not a TFDS dataset; shipped: {sorted(SHIPPED)}, "
            "a Hugging Face dataset: hf://OWNER/NAME, your own files: dataset.files=PATH, "
            "others: `python -c \"import tensorflow_datasets as tfds; "
            "print(tfds.list_builders())\"`") from None
    if not builder.is_prepared():
        if dataset_cfg.name not in SHIPPED:
            if not download:
                return None
            _check_can_download(dataset_cfg, builder)
        with _preparing(builder):  # another process may have prepared it meanwhile
            builder = tfds.builder(dataset_cfg.name, data_dir=data_dir)
            if not builder.is_prepared():
                builder.download_and_prepare()
    return builder


@contextlib.contextmanager
def _preparing(builder):
    """One process at a time prepares a dataset in a data folder: the processes of a
    multi-process run (or concurrent sweep jobs) all find it missing, and TFDS's own rename of
    its temporary folder fails for every one but the first."""
    import fcntl

    root = Path(builder.data_dir).parent.parent  # <data_dir>/<name>/<version>
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{builder.name}.prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _check_can_download(dataset_cfg, builder) -> None:
    where = builder.data_dir
    fix = (f"prepare it where there is a network (`tfds build {dataset_cfg.name} --data_dir DIR`), "
           "copy DIR here and set dataset.data_dir=DIR")
    if not dataset_cfg.download:
        raise UserError(f"dataset.name={dataset_cfg.name} is not prepared under {where} and "
                        f"dataset.download=false; {fix}")
    if not reachable(DOWNLOAD_PROBE_HOST):
        raise UserError(f"dataset.name={dataset_cfg.name} is not prepared under {where} and this "
                        f"machine cannot download it (offline); {fix}")

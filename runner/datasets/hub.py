"""Hugging Face datasets by name: dataset.name=hf://OWNER/NAME[@REVISION] (dataset.subset picks
a configuration), read with the `datasets` package and prepared like a user's files.

Why `datasets` and not TFDS's huggingface namespace: `datasets` is Hugging Face's own loader,
released with the hub's formats (Parquet conversions, gated repos, revisions, its cache and
HF_HUB_OFFLINE), while TFDS's namespace wraps it at one remove, asks the hub for metadata even for
a prepared copy and lags its releases. The records then go through the same TFDS builder as local
files (runner.datasets.user_data), so splits, slicing and exact reruns behave as for any dataset.
A local copy of such a repository (a folder of data files) works too: hf:///path/to/folder.
"""

from __future__ import annotations

import contextlib
from typing import Optional

from runner.datasets.user_data import Source, _digest
from runner.errors import UserError
from runner.network import reachable

PREFIX = "hf://"
HUB_HOST = "huggingface.co"


def is_hub(name: str) -> bool:
    return name.startswith(PREFIX)


def base_split(split: str) -> str:
    return split.split("[", 1)[0]


@contextlib.contextmanager
def _offline_unless_reachable(local: bool, cache_only: bool):
    """Offline, `datasets` would retry the hub for minutes; with the hub unreachable it is told
    so (its own offline mode: the local cache only), for this load only."""
    import datasets
    from huggingface_hub import constants

    offline = not local and (cache_only or not reachable(HUB_HOST))
    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    if offline:
        constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def hub_source(dataset_cfg, splits: list[str], cache_only: bool = False) -> Optional[Source]:
    """The named splits of the Hugging Face dataset dataset.name, loaded (or found in the cache).
    cache_only (planning): None when it is not in the local cache, instead of downloading it."""
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        raise UserError(f"dataset.name={dataset_cfg.name} is read with the `datasets` package: "
                        "pip install 'keras-runner[hf-data]'")
    import datasets

    handle, _, revision = dataset_cfg.name[len(PREFIX):].partition("@")
    local = handle.startswith("/")
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    with _offline_unless_reachable(local, cache_only) as offline:
        try:
            loaded = datasets.load_dataset(handle, name=dataset_cfg.subset,
                                           revision=revision or None)
        except Exception as exc:  # datasets raises many types; each becomes one line here
            if cache_only and offline:
                return None
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            fix = ("it is not in the local Hugging Face cache and huggingface.co cannot be "
                   "reached (offline?); load it once where the hub is reachable, or use its "
                   "stand-in (debug=smoke)") if offline else "check the name and dataset.subset"
            raise UserError(f"dataset.name={dataset_cfg.name} could not be loaded ({why}); "
                            f"{fix}") from None
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise UserError(f"dataset.split={missing[0]} is not a split of {dataset_cfg.name}; "
                        f"splits: {sorted(loaded)}")
    parts = ["hub", handle, dataset_cfg.subset, revision]
    parts += [f"{s}:{loaded[s]._fingerprint}" for s in splits]

    def reader(split):
        def records():
            for i, record in enumerate(loaded[split]):
                yield f"{dataset_cfg.name}[{split}] row {i + 1}", record
        return records

    return Source(dataset_cfg.name, _digest(*parts), {s: reader(s) for s in splits})

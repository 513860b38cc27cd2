"""Where numbers go: metrics.jsonl and throughput.jsonl in the run folder, and W&B (offline by
default).

metrics.jsonl holds only what the config and seed determine (losses, accuracy, learning rate,
token counts), so two runs of the same config on the same software and devices give identical
files; timings (tokens/s) go to throughput.jsonl. W&B gets both.

W&B's mode is always set explicitly: online without a key or a network would otherwise hang for
about 100 s, so online mode checks both first and fails in seconds with the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from runner.errors import UserError
from runner.network import reachable
from runner.rundir import METRICS, THROUGHPUT, RunDir, append_jsonl


def preflight(tracking_cfg) -> None:
    """Fail in seconds, before any weight is loaded, if the tracking mode cannot work."""
    if tracking_cfg.mode == "online":
        _check_online()


def _check_online() -> None:
    if not (os.environ.get("WANDB_API_KEY") or _netrc_has_key()):
        raise UserError("tracking.mode=online needs a W&B API key: run `wandb login` or set "
                        "WANDB_API_KEY, or use tracking.mode=offline and `wandb sync` later")
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not reachable(host, port, timeout=5.0):
        raise UserError(f"tracking.mode=online but {host} cannot be reached (offline?); use "
                        "tracking.mode=offline and `wandb sync` the run folder later")


def _netrc_has_key() -> bool:
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Tracker:
    """metrics.jsonl + an optional W&B run. One per training run, on process 0 only."""

    def __init__(self, tracking_cfg, folder: RunDir, config: dict, name: str,
                 group: str | None = None, write: bool = True):
        """write=False (processes other than 0 of a multi-process run): record nothing."""
        self.mode = str(tracking_cfg.mode) if write else "disabled"
        self.write = write
        self.folder = folder
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        self.run = wandb.init(
            mode=self.mode, dir=str(folder.path), project=tracking_cfg.project,
            entity=tracking_cfg.entity, group=tracking_cfg.group or group, name=name,
            tags=list(tracking_cfg.tags), config=config,
            settings=wandb.Settings(console="off", init_timeout=90, x_disable_stats=True))

    def log(self, metrics: dict, step: int, timing: dict | None = None) -> None:
        """`metrics`: determined by config and seed; `timing`: measured (tokens/s, ...)."""
        if not self.write:
            return
        append_jsonl(self.folder / METRICS, {"step": step, **metrics})
        if timing:
            append_jsonl(self.folder / THROUGHPUT, {"step": step, **timing})
        if self.run is not None:
            self.run.log({**metrics, **(timing or {})}, step=step)

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def summary(self, values: dict) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    @property
    def wandb_dir(self) -> str | None:
        return str(Path(self.run.dir).parent) if self.run is not None else None

    def preempting(self) -> None:
        """Tell W&B the run stops to be resumed (online, it shows as preempted, not crashed)."""
        if self.run is not None:
            self.run.mark_preempting()

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None

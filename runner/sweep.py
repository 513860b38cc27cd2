"""The end of a `-m` sweep: which jobs finished, which failed and why, and a non-zero exit if any
failed. A Hydra callback (conf/config.yaml, hydra.callbacks), so it runs in the launching
process whatever the launcher (in-process, or submitit's one process per job), after every job.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from runner.rundir import job_folders

log = logging.getLogger("runner")


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = job_folders(sweep_dir)
        failed = {d: s for d, s in jobs.items() if s.get("status") != "finished"}
        lines = [f"sweep {sweep_dir}: {len(jobs) - len(failed)} of {len(jobs)} jobs finished"]
        for job_dir, summary in failed.items():
            lines.append(f"  FAILED {job_dir.relative_to(sweep_dir)}: "
                         f"{summary.get('status')}: {summary.get('error', '')}")
        if failed:
            lines.append("re-launch the same command with hydra.sweep.dir=" + str(sweep_dir) +
                         " to skip the finished jobs and resume or retry the others")
        print("\n".join(lines), file=sys.stderr if failed else sys.stdout, flush=True)
        if failed:
            sys.exit(1)

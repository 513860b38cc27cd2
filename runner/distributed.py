"""Multi-controller JAX: one process per host, one global mesh.

`distributed.mode`:
- off: one process (the default).
- explicit: `distributed.coordinator` (host:port of process 0), `num_processes`, `process_id`.
- auto: a submitit job (hydra/launcher=submitit_local or slurm, `tasks_per_node` > 1) gives its
  task count and rank; otherwise JAX's own cluster detection (SLURM under srun, Cloud TPU pod
  slices, Open MPI); a single process if none applies.

It calls jax.distributed.initialize directly rather than keras.distribution.initialize (which
only forwards to it) because only the former takes the timeouts that turn a peer that never
starts or dies into an error within a bounded time instead of a hang. It must run before any
device query, so entry points call it right after setting the process environment.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from dataclasses import dataclass

from runner.errors import UserError

log = logging.getLogger(__name__)

# Environment variables that carry a process's rank, in the order they are trusted, for the
# per-process log file name (decided before the config's distributed section is acted on).
RANK_VARIABLES = ("SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID", "TPU_WORKER_ID")


@dataclass(frozen=True)
class Topology:
    process_id: int
    num_processes: int
    coordinator: str | None  # None: one process, or JAX's own cluster detection
    source: str  # how it was decided, for the log


def _port_for(job_id: str) -> int:
    """A coordinator port every task of one job derives alike (and other jobs rarely share)."""
    return 20000 + int(hashlib.sha256(job_id.encode()).hexdigest(), 16) % 20000


def _from_submitit() -> Topology | None:
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return Topology(0, 1, None, f"submitit {env.cluster} job with one task")
    host = env.hostnames[0] if env.cluster == "slurm" else "localhost"
    job = str(env.job_id).split("_")[0]
    return Topology(env.global_rank, env.num_tasks, f"{host}:{_port_for(job)}",
                    f"submitit {env.cluster} job {job}")


def topology(cfg) -> Topology:
    """What `distributed` asks for, checked; raises UserError naming the key to fix."""
    mode = str(cfg.mode)
    if mode == "off":
        return Topology(0, 1, None, "distributed.mode=off")
    if mode == "explicit":
        missing = [k for k in ("coordinator", "num_processes", "process_id")
                   if getattr(cfg, k) is None]
        if missing:
            raise UserError(f"distributed.mode=explicit needs distributed.{missing[0]} "
                            "(coordinator host:port, num_processes, process_id)")
        if not 0 <= cfg.process_id < cfg.num_processes:
            raise UserError(f"distributed.process_id={cfg.process_id} must be in "
                            f"[0, distributed.num_processes={cfg.num_processes})")
        if ":" not in cfg.coordinator:
            raise UserError(f"distributed.coordinator={cfg.coordinator} must be host:port")
        return Topology(cfg.process_id, cfg.num_processes, cfg.coordinator,
                        "distributed.mode=explicit")
    found = _from_submitit()
    if found is not None:
        return found
    return Topology(-1, -1, None, "JAX cluster detection")  # resolved by jax itself


def initialize(cfg) -> Topology:
    """Join the multi-process program (or not), before the first device query."""
    wanted = topology(cfg)
    if wanted.num_processes == 1:
        return wanted
    import jax

    # JAX aborts the process (a C++ fatal error and stack trace) when its own timeout passes;
    # the watchdog ends it first, with one line that says what happened and what to check.
    watchdog = threading.Timer(cfg.initialization_timeout_s, _give_up, args=(wanted, cfg))
    watchdog.daemon = True
    watchdog.start()
    kwargs = dict(initialization_timeout=cfg.initialization_timeout_s + 30,
                  heartbeat_timeout_seconds=cfg.heartbeat_timeout_s)
    if wanted.coordinator is not None:
        kwargs.update(coordinator_address=wanted.coordinator,
                      num_processes=wanted.num_processes, process_id=wanted.process_id)
    try:
        jax.distributed.initialize(**kwargs)
        watchdog.cancel()
    except ValueError as exc:  # JAX found no cluster to join: one process
        watchdog.cancel()
        if wanted.coordinator is None:
            log.info("distributed.mode=auto: no cluster detected (%s); one process",
                     str(exc).splitlines()[0])
            return Topology(0, 1, None, "distributed.mode=auto, no cluster")
        raise
    except Exception as exc:  # a bad address, or the coordinator refused
        watchdog.cancel()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"distributed: process {wanted.process_id} of {wanted.num_processes} could not form "
            f"the program with coordinator {wanted.coordinator or '(auto)'} within "
            f"distributed.initialization_timeout_s={cfg.initialization_timeout_s} ({first[:200]}); "
            "check that every process started with the same coordinator and num_processes"
        ) from None
    joined = Topology(jax.process_index(), jax.process_count(), wanted.coordinator, wanted.source)
    log.info("distributed: process %d of %d (%s), %d local of %d devices", joined.process_id,
             joined.num_processes, joined.source, jax.local_device_count(), jax.device_count())
    return joined


def _give_up(wanted: Topology, cfg) -> None:
    print(f"error: distributed: process {wanted.process_id} of {wanted.num_processes} waited "
          f"distributed.initialization_timeout_s={cfg.initialization_timeout_s} for the others at "
          f"coordinator {wanted.coordinator or '(auto)'}; check that every process was started "
          "with the same coordinator and num_processes, and that none died at start",
          file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(2)


def peer_stopped(exc: BaseException) -> bool:
    """Does this error mean another process of the program is gone?"""
    text = str(exc)
    return any(s in text for s in ("Gloo", "Connection closed by peer", "heartbeat timeout",
                                   "Connection reset by peer", "task has failed"))


def exit_after_peer_stopped(exc: BaseException) -> None:
    """End this process now, with one clear line: left to itself, JAX aborts at exit (a shutdown
    barrier the dead peer never reaches) with a C++ stack trace."""
    first = str(exc).strip().splitlines()[0][:200]
    print(f"error: distributed: another process of this program stopped ({first}); re-launch "
          "every process with the same command to resume from the last checkpoint "
          "(train.checkpoint_every)", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(3)


def gather_ints(value: int) -> list[int]:
    """Every process's `value`, in process order, on every process: a collective that all
    processes of the program must call at the same point (one process: [value])."""
    import jax

    if jax.process_count() == 1:
        return [int(value)]
    import numpy as np
    from jax.experimental import multihost_utils

    return [int(v) for v in np.ravel(multihost_utils.process_allgather(
        np.array([value], np.int32)))]


def log_file_name(process_id=None) -> str:
    """runner.log for process 0 (or a single process), runner.process<N>.log for the others:
    every process keeps its own log. Used by conf/config.yaml's hydra.job_logging."""
    if process_id is None:
        for name in RANK_VARIABLES:
            if os.environ.get(name, "").isdigit():
                process_id = int(os.environ[name])
                break
    return "runner.log" if not process_id else f"runner.process{int(process_id)}.log"

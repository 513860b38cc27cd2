"""How a process finds its place in a multi-process program, in-process (no JAX program
formed): the topology each distributed.mode asks for, its mistakes, and per-process logs."""

from types import SimpleNamespace as NS

import pytest

from runner.distributed import Topology, log_file_name, topology
from runner.errors import UserError


def cfg(mode="explicit", coordinator="localhost:1234", num_processes=2, process_id=0):
    return NS(mode=mode, coordinator=coordinator, num_processes=num_processes,
              process_id=process_id, initialization_timeout_s=5, heartbeat_timeout_s=5)


def test_off_is_one_process():
    assert topology(cfg(mode="off")) == Topology(0, 1, None, "distributed.mode=off")


def test_explicit_gives_what_it_names():
    assert topology(cfg(process_id=1)) == Topology(1, 2, "localhost:1234",
                                                   "distributed.mode=explicit")


@pytest.mark.parametrize("changes,needle", [
    (dict(coordinator=None), "needs distributed.coordinator"),
    (dict(num_processes=None), "needs distributed.num_processes"),
    (dict(process_id=2), "distributed.process_id=2 must be in [0, distributed.num_processes=2)"),
    (dict(coordinator="localhost"), "must be host:port"),
])
def test_explicit_mistakes_name_the_key(changes, needle):
    with pytest.raises(UserError) as info:
        topology(cfg(**changes))
    assert needle in str(info.value)


def test_auto_outside_a_submitit_job_leaves_detection_to_jax(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert topology(cfg(mode="auto")).source == "JAX cluster detection"


@pytest.mark.parametrize("env,expected", [
    ({}, "runner.log"), ({"SLURM_PROCID": "0"}, "runner.log"),
    ({"SLURM_PROCID": "3"}, "runner.process3.log"),
    ({"SUBMITIT_LOCAL_GLOBALID": "1", "SLURM_PROCID": "5"}, "runner.process1.log"),
])
def test_every_process_logs_to_its_own_file(monkeypatch, env, expected):
    for name in ("SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID", "TPU_WORKER_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert log_file_name() == expected
    assert log_file_name(2) == "runner.process2.log"

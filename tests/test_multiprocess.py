"""Multi-controller JAX on this CPU: 2 processes x 4 virtual devices form one 8-device mesh and
train like 1 process x 8 devices (a DPO run too); only process 0 writes; a peer that never starts or dies ends
the others in bounded time; a submitit sweep whose jobs are 2-process programs."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from runner.rundir import RunDir

pytestmark = pytest.mark.slow

TRAIN = ["train.steps=12", "train.log_every=4", "generate.prompts=[]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def explicit(port: int, process_id: int, *extra: str) -> list[str]:
    return ["cpu_devices=4", "distributed.mode=explicit", f"distributed.coordinator=localhost:{port}",
            "distributed.num_processes=2", f"distributed.process_id={process_id}", *extra]


def start(args, cwd: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("RUNNER_FULL_ERROR", None)
    env.pop("XLA_FLAGS", None)  # each process sets its own device count from cpu_devices
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def metrics(run_dir: Path) -> list[dict]:
    return RunDir(run_dir).metrics()


def test_two_processes_train_like_one_process_with_all_devices(workdir):
    one = run_cli(*TRAIN, "hydra.run.dir=one", cwd=workdir, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    port = free_port()
    procs = [start([*TRAIN, *explicit(port, i), "hydra.run.dir=two"], workdir,
                   workdir / f"p{i}.err") for i in (1, 0)]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], (workdir / "p0.err").read_text()[-3000:]
    single, multi = metrics(workdir / "one"), metrics(workdir / "two")
    assert [m["step"] for m in multi] == [m["step"] for m in single]
    assert [m["tokens"] for m in multi] == [m["tokens"] for m in single]  # same global batches
    # the same numbers; only the order of floating-point sums across processes differs
    assert [m["loss"] for m in multi] == pytest.approx([m["loss"] for m in single], rel=1e-5)
    env = RunDir(workdir / "two").env()
    assert env["process_count"] == 2 and len(env["devices"]) == 8
    # process 0 wrote the folder; each process kept its own log
    assert (workdir / "two" / "runner.log").is_file()
    assert "process 1 of 2" in (workdir / "two" / "runner.process1.log").read_text()
    assert len(list((workdir / "two" / "wandb").glob("offline-run-*"))) == 1
    assert RunDir(workdir / "two").finished


def test_a_dpo_run_over_two_processes_trains_like_one_process(workdir):
    """Preference pairs split over processes whole (each process's rows are whole pairs), the
    reference the adapter switched off in each: the same metrics as one process."""
    run = ["experiment=dpo_tiny", "train.steps=6", "train.log_every=2", "train.eval_every=6",
           "generate.prompts=[]", "tracking.mode=disabled"]
    one = run_cli(*run, "hydra.run.dir=one", cwd=workdir, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    port = free_port()
    procs = [start([*run, *explicit(port, i), "hydra.run.dir=two"], workdir,
                   workdir / f"p{i}.err") for i in (1, 0)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], \
        (workdir / "p0.err").read_text()[-3000:]
    single, multi = metrics(workdir / "one"), metrics(workdir / "two")
    assert [m["step"] for m in multi] == [m["step"] for m in single] == [2, 4, 6, 6]
    for name in ("loss", "rewards/margins", "logps/chosen", "eval_loss", "eval_rewards/margins"):
        ours = [m[name] for m in multi if name in m]
        assert ours and ours == pytest.approx([m[name] for m in single if name in m],
                                              rel=1e-4, abs=1e-5), name
    # accuracies count near-ties at first (every reward starts at 0), which the order of the
    # processes' sums can tip; once the margins are clear they agree
    assert multi[-1]["eval_rewards/accuracies"] == single[-1]["eval_rewards/accuracies"]
    assert multi[2]["rewards/accuracies"] == single[2]["rewards/accuracies"]


def test_sigterm_to_one_process_stops_both_at_one_step_and_one_process_resumes(workdir):
    """SIGTERM reaches process 1 only: the two agree on a step, each writes its own shards of
    the checkpoint there, both exit 143 by themselves; one process with all 8 devices resumes
    from it (Orbax reads into that run's shardings) and logs what an uninterrupted run logs."""
    steps = ["train.steps=40", "train.log_every=4", "generate.prompts=[]",
             "tracking.mode=disabled"]  # no periodic checkpoints: the stop's is the only one
    whole = run_cli(*steps, "hydra.run.dir=whole", cwd=workdir, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    port = free_port()
    procs = [start([*steps, *explicit(port, i), "hydra.run.dir=cut"], workdir,
                   workdir / f"c{i}.err") for i in (0, 1)]
    deadline = time.time() + 600
    while not any(m["step"] >= 8 for m in metrics(workdir / "cut")):
        assert all(p.poll() is None for p in procs), (workdir / "c0.err").read_text()[-3000:]
        assert time.time() < deadline, "step 8 was never logged"
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    assert [p.wait(timeout=120) for p in procs] == [143, 143], \
        (workdir / "c0.err").read_text()[-3000:]
    stopped = RunDir(workdir / "cut").summary()
    assert stopped["status"] == "preempted" and 8 <= stopped["stopped_at_step"] < 40
    done = workdir / "cut" / "checkpoints" / f"step_{stopped['stopped_at_step']:08d}"
    shards = sorted(d.name for d in (done / "state").glob("ocdbt.process_*"))
    assert shards == ["ocdbt.process_0", "ocdbt.process_1"]  # each process wrote its own
    resumed = run_cli(*steps, "hydra.run.dir=cut", cwd=workdir, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = RunDir(workdir / "cut").summary()
    assert summary["status"] == "finished"
    assert summary["resumed_from_step"] == stopped["stopped_at_step"]
    single, cut = metrics(workdir / "whole"), metrics(workdir / "cut")
    assert [m["step"] for m in cut] == [m["step"] for m in single]
    assert [m["loss"] for m in cut] == pytest.approx([m["loss"] for m in single], rel=1e-5)


def test_a_peer_that_never_starts_ends_the_other_with_a_clear_error(workdir):
    began = time.time()
    proc = start([*TRAIN, *explicit(free_port(), 0, "distributed.initialization_timeout_s=5"),
                  "hydra.run.dir=alone"], workdir, workdir / "alone.err")
    assert proc.wait(timeout=120) == 2
    assert time.time() - began < 90
    err = (workdir / "alone.err").read_text()
    assert "error: distributed: process 0 of 2 waited distributed.initialization_timeout_s=5" \
        in err
    assert "Traceback" not in err


def test_a_peer_that_dies_ends_the_other_within_a_bounded_time(workdir):
    port = free_port()
    args = ["train.steps=2000", "train.log_every=2", "generate.prompts=[]",
            "tracking.mode=disabled", "hydra.run.dir=cut"]
    extra = "distributed.heartbeat_timeout_s=10"
    survivor = start([*args, *explicit(port, 0, extra)], workdir, workdir / "p0.err")
    victim = start([*args, *explicit(port, 1, extra)], workdir, workdir / "p1.err")
    deadline = time.time() + 300
    while not (workdir / "cut" / "metrics.jsonl").exists():  # training has started
        assert survivor.poll() is None and time.time() < deadline
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    killed = time.time()
    code = survivor.wait(timeout=180)
    assert code != 0 and time.time() - killed < 10 + 60
    err = (workdir / "p0.err").read_text()
    # JAX's heartbeat check or the broken collective, whichever notices first; both say why
    assert ("another process of this program stopped" in err
            or "another task died" in err), err[-2000:]
    assert not RunDir(workdir / "cut").finished


def test_submitit_sweep_of_two_process_jobs(workdir):
    proc = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                   "distributed.mode=auto", "cpu_devices=4", "lora.rank=4", *TRAIN,
                   "tracking.mode=disabled", "hydra.sweep.dir=sweep", cwd=workdir, timeout=900,
                   env={"XLA_FLAGS": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = workdir / "sweep" / "0"
    assert RunDir(job).finished
    assert RunDir(job).env()["process_count"] == 2
    assert "process 1 of 2 (submitit local job" in (job / "runner.process1.log").read_text()
    assert [m["step"] for m in metrics(job)] == [4, 8, 12]

"""Stop signals, in-process: the first is noted at once (by the watcher thread, whatever the
main thread is doing) and the previous handlers come back afterwards; the second ends the
process at once with 128 + the signal's number, after marking the folder."""

import os
import signal
import subprocess
import sys
import time

import pytest

from runner.stopping import Request, StopRequests, Stopped


def _wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("number,status,code", [(signal.SIGTERM, "preempted", 143),
                                                (signal.SIGUSR1, "preempted", 138),
                                                (signal.SIGINT, "interrupted", 130)])
def test_the_first_signal_is_a_request_and_the_handlers_come_back(number, status, code):
    before = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    with StopRequests() as stops:
        assert stops.requested is None and stops.agreed(1) is None
        os.kill(os.getpid(), number)
        _wait_for(lambda: stops.requested is not None)  # noted by the watcher thread
        assert stops.requested == Request(number) == stops.agreed(1)
        assert (stops.requested.status, stops.requested.exit_code) == (status, code)
        with pytest.raises(Stopped, match=f"{signal.Signals(number).name}: stopped after step 7"):
            stops.stop_now(1, 7)
        stops.stop_now(2, 7)  # several processes stop only at an agreed step
    assert {n: signal.getsignal(n) for n in before} == before


def test_a_second_signal_ends_the_process_at_once(tmp_path):
    """Even while the main thread is busy (here: sleeping in C), the second signal ends it."""
    marked = tmp_path / "marked"
    script = f"""
import os, signal, sys, time
from pathlib import Path
from runner.stopping import StopRequests
with StopRequests(on_second=lambda r: Path({str(marked)!r}).write_text(r.status)):
    print("ready", flush=True)
    time.sleep(120)
print("never", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - began < 10
    assert "never" not in out and "Traceback" not in err
    assert "SIGINT again: stopped at once" in err and "SIGINT (Ctrl-C): stopping" in err
    assert marked.read_text() == "interrupted"

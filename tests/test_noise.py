"""Library noise off stderr: the start-up lines TensorFlow, absl and CUDA probes print from C++
are dropped, everything else passes, in order; RUNNER_LIBRARY_LOGS=1 keeps them all."""

import os
import subprocess
import sys

import pytest

from runner.noise import is_noise

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796198447.356328   11578 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results",
    "I0000 00:00:1796198447.356756   11578 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1796198450.461009   11578 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796197956.335040    5586 util.cc:131] oneDNN supports DT_INT64 only on "
    "platforms with AVX-512.",
]
KEPT = ["error: train.batch_size=7 does not divide by the mesh's batch axis",
        "E0000 00:00:1.0  1 pjrt_client.cc:12] Resource exhausted: out of memory",
        "Traceback (most recent call last):", "[2026-12-02 08:01:41][runner.train][INFO] - x"]


def test_what_counts_as_noise():
    assert all(is_noise(line) for line in NOISE)
    assert not any(is_noise(line) for line in KEPT)


@pytest.mark.parametrize("keep,end", [(False, "exit"), (True, "exit"), (False, "os._exit"),
                                      (False, "SIGKILL")])
def test_the_filter_drops_noise_and_keeps_the_rest_in_order_however_the_process_ends(keep, end):
    """Written to file descriptor 2 directly, as C++ libraries do, mixed with Python's own; the
    last line written just before the process ends, normally, at once (os._exit, as a second
    Ctrl-C does) or killed: the filter, a process of its own, still forwards it."""
    lines = [NOISE[0], KEPT[0], NOISE[1], KEPT[2], KEPT[3]]
    ending = {"exit": "", "os._exit": "os._exit(3)\n",
              "SIGKILL": "import signal\nos.kill(os.getpid(), signal.SIGKILL)\n"}[end]
    script = ("import os, sys\nfrom runner import noise\nnoise.install()\n"
              f"os.write(2, {(chr(10).join(lines[:2]) + chr(10)).encode()!r})\n"
              f"print({lines[2]!r}, file=sys.stderr)\n"
              f"os.write(2, {(lines[3] + chr(10)).encode()!r})\n"
              f"print({lines[4]!r}, file=sys.stderr, flush=True)\n" + ending)
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_LIBRARY_LOGS"}
    if keep:
        env["RUNNER_LIBRARY_LOGS"] = "1"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == {"exit": 0, "os._exit": 3, "SIGKILL": -9}[end], proc.stderr
    assert proc.stderr.splitlines() == (lines if keep else [KEPT[0], KEPT[2], KEPT[3]])

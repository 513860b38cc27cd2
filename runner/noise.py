"""Library noise off stderr: the lines TensorFlow, absl and their CUDA probes print from C++ as
they load (`WARNING: All log messages before absl::InitializeLog()...`, `oneDNN custom
operations are on`, `failed call to cuInit`, `Could not find cuda drivers`, the CPU-instructions
notice), which no environment variable silences: TF_CPP_MIN_LOG_LEVEL does not reach absl's
lines printed before its logging starts. A user's first stderr line is then the runner's own,
and an `error:` line is the last.

How: stderr's file descriptor is replaced by a pipe, and a thread forwards every line but those
to the real stderr. RUNNER_LIBRARY_LOGS=1 leaves stderr alone (for a bug report). Lines written
just before the process ends at once (os._exit) go through write_now(), which bypasses the pipe.
Installed by runner.startup only, before TensorFlow or JAX is imported.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import sys
import threading

ENV = "RUNNER_LIBRARY_LOGS"
# absl's C++ log line prefix (I1202 08:01:41.588 1234 file.cc:12] ...), from these files only:
# TensorFlow's start-up notices and its probes for CUDA on a machine without it.
_NOISY_SOURCES = ("port.cc", "cudart_stub.cc", "cpu_feature_guard.cc", "cuda_platform.cc",
                  "cuda_executor.cc", "cuda_diagnostics.cc", "cuda_dnn.cc", "cuda_fft.cc",
                  "cuda_blas.cc")
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (" + "|".join(re.escape(s) for s in _NOISY_SOURCES) + r"):\d+\] "
    r"|[IWE]\d{4} [\d:. ]+\d+ \S+:\d+\] oneDNN "
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate"
    r"|normalizer\.cc\(\d+\) LOG\(INFO\) precompiled_charsmap is empty)")

_state: dict = {}


def is_noise(line: str) -> bool:
    return bool(_NOISE.match(line))


def install() -> None:
    """Filter fd 2 for the rest of the process (once; not with RUNNER_LIBRARY_LOGS=1)."""
    if _state or os.environ.get(ENV, "") == "1":
        return
    sys.stderr.flush()
    read, write = os.pipe()
    original = os.dup(2)
    os.dup2(write, 2)
    os.close(write)
    _state.update(original=original, read=read, stop=threading.Event(), lock=threading.Lock())
    _state["thread"] = threading.Thread(target=_forward, name="stderr-filter", daemon=True)
    _state["thread"].start()
    atexit.register(finish)


def _forward() -> None:
    pending = b""
    read, stop = _state["read"], _state["stop"]
    while True:
        ready, _, _ = select.select([read], [], [], 0.1)
        if not ready:
            if stop.is_set():
                break
            continue
        data = os.read(read, 65536)
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        _emit(lines)
    if pending:
        _emit([pending], newline=False)


def _emit(lines, newline: bool = True) -> None:
    kept = [ln for ln in lines if not is_noise(ln.decode("utf-8", "replace"))]
    if kept:
        text = b"\n".join(kept) + (b"\n" if newline else b"")
        with _state["lock"]:
            os.write(_state["original"], text)


def write_now(text: str) -> None:
    """Write to the real stderr at once: for a line printed just before os._exit, which would
    otherwise end the process with the line still in the pipe."""
    if _state:
        sys.stderr.flush()
        with _state["lock"]:
            os.write(_state["original"], text.encode())
    else:
        sys.stderr.write(text)
        sys.stderr.flush()


def finish() -> None:
    """Put the real stderr back and forward what is still in the pipe (at exit)."""
    if not _state or "done" in _state:
        return
    _state["done"] = True
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_state["original"], 2)  # this process's writes go straight out from here on
    _state["stop"].set()  # a child (the W&B service) may hold the pipe open: no EOF to wait for
    _state["thread"].join(timeout=2)

"""Library noise off stderr: the lines TensorFlow, absl and their CUDA probes print from C++ as
they load (`WARNING: All log messages before absl::InitializeLog()...`, `oneDNN custom
operations are on`, `failed call to cuInit`, `Could not find cuda drivers`, the CPU-instructions
notice), which no environment variable silences: TF_CPP_MIN_LOG_LEVEL does not reach absl's
lines printed before its logging starts. A user's first stderr line is then the runner's own,
and an `error:` line is the last.

How: stderr's file descriptor becomes a pipe into a small filter process that forwards every
line but those to the real stderr, in order. A process of its own, not a thread: it outlives
whatever ends this one (os._exit, a fatal signal, a C++ abort), so no line written before the
end is lost, and it ends when the last writer (this process, or a child that inherited stderr)
closes the pipe. RUNNER_LIBRARY_LOGS=1 leaves stderr alone (for a bug report). Installed by
runner.startup only, before TensorFlow or JAX is imported.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ENV = "RUNNER_LIBRARY_LOGS"
# absl's C++ log line prefix (I1202 08:01:41.588 1234 file.cc:12] ...), from these files only:
# TensorFlow's start-up notices and its probes for CUDA on a machine without it.
_NOISY_SOURCES = ("port.cc", "cudart_stub.cc", "cpu_feature_guard.cc", "cuda_platform.cc",
                  "cuda_executor.cc", "cuda_diagnostics.cc", "cuda_dnn.cc", "cuda_fft.cc",
                  "cuda_blas.cc")
NOISE = (r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
         r"STDERR"
         r"|[IWE]\d{4} [\d:. ]+\d+ (" + "|".join(re.escape(s) for s in _NOISY_SOURCES) + r"):\d+\] "
         r"|[IWE]\d{4} [\d:. ]+\d+ \S+:\d+\] oneDNN "
         r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate"
         r"|normalizer\.cc\(\d+\) LOG\(INFO\) precompiled_charsmap is empty)")
_NOISE = re.compile(NOISE)

# The filter process: the standard library only, started with -I -S (no site, no user paths,
# nothing of the caller's environment), reading bytes so no encoding can fail it.
_FILTER = f"""
import re, sys
noise = re.compile({NOISE!r}.encode())
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not noise.match(line):
        try:
            out.write(line)
            out.flush()
        except OSError:  # the real stderr is gone (a closed terminal): keep reading, drop it
            pass
"""

_state: dict = {}


def is_noise(line: str) -> bool:
    return bool(_NOISE.match(line))


def install() -> None:
    """Filter fd 2 for the rest of the process (once; not with RUNNER_LIBRARY_LOGS=1)."""
    if _state or os.environ.get(ENV, "") == "1":
        return
    sys.stderr.flush()
    # Its own session: a Ctrl-C to the terminal's process group must not end it before it has
    # forwarded the lines this process writes as it stops.
    real_stderr = os.dup(2)
    filter_process = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER],
                                      stdin=subprocess.PIPE, stdout=real_stderr,
                                      start_new_session=True, close_fds=True)
    os.close(real_stderr)  # the filter holds it
    os.dup2(filter_process.stdin.fileno(), 2)
    filter_process.stdin.close()  # fd 2 is now the only writer this process holds
    _state["process"] = filter_process

"""Stop requests: what a scheduler or a user sends a running job, and how the run answers.

SIGTERM (a scheduler preempting the job; SLURM's default before it kills one), SIGUSR1 (what
SLURM sends ahead of a time limit when asked: `--signal=USR1@90`) and SIGINT (Ctrl-C, or `kill
-INT`) ask the run to stop: it finishes the step in flight, writes a checkpoint at that step
(every process at the same step), marks summary.json "preempted" (SIGTERM, SIGUSR1) or
"interrupted" (SIGINT) and exits with 128 + the signal's number (143, 138, 130), the code a
shell gives a process that signal ended: "not finished", so a scheduler requeues it, and the
same command resumes it from that step. A second signal ends the process at once.

Why a watcher thread: Python runs signal handlers in the main thread between bytecodes, which a
step, an XLA compile or a checkpoint write can hold for minutes. The C-level handler also
writes the signal's number to a pipe (signal.set_wakeup_fd); a thread reading that pipe sees it
at once, so the first signal's line appears when it is sent and the second ends the process
even while the main thread is inside XLA.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from runner.distributed import gather_ints

log = logging.getLogger(__name__)

# signal -> (status summary.json gets, what it usually means)
SIGNALS = {signal.SIGTERM: ("preempted", "a scheduler's preemption, or kill"),
           signal.SIGUSR1: ("preempted", "the job's time limit is near"),
           signal.SIGINT: ("interrupted", "Ctrl-C")}


@dataclass(frozen=True)
class Request:
    signal_number: int

    @property
    def name(self) -> str:
        return signal.Signals(self.signal_number).name

    @property
    def status(self) -> str:
        return SIGNALS[self.signal_number][0]

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


class Stopped(Exception):
    """The run stopped as a signal asked: `step` is the step its last checkpoint holds."""

    def __init__(self, request: Request, step: int, checkpoint: Optional[str]):
        self.request, self.step, self.checkpoint = request, step, checkpoint
        saved = f"its checkpoint at step {step} is {checkpoint}" if checkpoint else \
            f"nothing to save since step {step}"
        super().__init__(f"{request.name}: stopped after step {step}, {saved}; run the same "
                         "command again to resume")


class StopRequests:
    """Listens for stop signals while a run is inside it (`with StopRequests(...) as stops:`).

    `requested` is the first signal's Request (None until one arrives). on_second is called
    (from the watcher thread) before a second signal ends the process: it marks the folder.
    Outside the main thread (Python allows signal handlers only there) it listens to nothing."""

    def __init__(self, on_second: Callable[[Request], None] | None = None):
        self.requested: Optional[Request] = None
        self._on_second = on_second
        self._previous: dict = {}
        self._wakeup = None
        self._pipe = None
        self._thread = None

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is not threading.main_thread():
            return self
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._pipe = (read, write)
        # Python-level handlers that do nothing: they keep the default actions (die at once,
        # or KeyboardInterrupt) away; the watcher thread acts on what the pipe says.
        for number in SIGNALS:
            self._previous[number] = signal.signal(number, lambda *_: None)
        self._wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="stop-requests", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._pipe is None:
            return
        signal.set_wakeup_fd(self._wakeup)
        for number, handler in self._previous.items():  # None: one set outside Python
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        read, write = self._pipe
        os.write(write, b"\0")  # wakes the watcher, which ends on a 0
        self._thread.join(timeout=5)
        os.close(read)
        os.close(write)
        self._pipe = None

    def stop_now(self, process_count: int, step: int) -> None:
        """Between stages (loading, sampling), where no step is in flight: a single process
        stops at once, with nothing to save (several wait for the first step's agreement)."""
        if process_count == 1 and self.requested is not None:
            raise Stopped(self.requested, step, None)

    def agreed(self, process_count: int) -> Optional[Request]:
        """The stop every process of the run agrees on, asked by all of them after the same
        step: the first signal any of them received (process order breaks ties), or None. One
        process asks no one; several gather their requests (a small all-gather per step)."""
        if process_count == 1:
            return self.requested

        mine = self.requested.signal_number if self.requested is not None else 0
        chosen = next((n for n in gather_ints(mine) if n), None)
        return Request(chosen) if chosen else None

    def _watch(self) -> None:
        read = self._pipe[0]
        while True:
            data = os.read(read, 64)
            for number in data:
                if number == 0:
                    return
                if number in SIGNALS:
                    self._received(number)

    def _received(self, number: int) -> None:
        request = Request(number)
        if self.requested is None:
            self.requested = request
            log.warning("%s (%s): stopping after the step in flight, with a checkpoint at that "
                        "step; send it again to stop at once", request.name, SIGNALS[number][1])
            return
        if self._on_second is not None:
            try:
                self._on_second(request)
            except Exception:  # noqa: BLE001 - ending now matters more than marking the folder
                pass
        print(f"{request.name} again: stopped at once, without a checkpoint of the step in "
              "flight; the same command resumes from the last checkpoint", file=sys.stderr,
              flush=True)
        logging.shutdown()
        os._exit(request.exit_code)

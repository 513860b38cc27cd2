"""One quick TCP probe, so offline machines fail in seconds instead of retrying for minutes.

RUNNER_OFFLINE=1 makes every probe answer "unreachable" without trying: the tests set it so
that what they check about offline machines holds on a machine that is online, and a user on an
air-gapped cluster can set it to skip the probes' seconds."""

import os
import socket

PROBE_TIMEOUT_S = 3.0
OFFLINE_VARIABLE = "RUNNER_OFFLINE"


def reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    if os.environ.get(OFFLINE_VARIABLE) == "1":
        return False
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False

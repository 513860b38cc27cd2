"""One quick TCP probe, so offline machines fail in seconds instead of retrying for minutes."""

import socket

PROBE_TIMEOUT_S = 3.0


def reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False

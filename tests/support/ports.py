"""A free TCP port for a test's own server (web app, broker, SMTP, a process under test).

Asking the kernel for port 0 hands out a port from the *ephemeral* range, the same range
outgoing connections take their local ports from. Between the probe closing and the
server binding, a test's own client connection (there are thousands in a suite) could take
that port, and the server then fails with "address already in use" (seen once in CI). Ports
below the ephemeral range are never handed to outgoing connections, so the probe picks one
of those, checks it binds, and never returns the same port twice in one process.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000  # above the well-known and registered services we run beside
_given: set[int] = set()
_rng = random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "big"))


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in _RANGE_FILE.read_text(encoding="ascii").split())
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the ephemeral range when there is room."""
    low, high = _ephemeral_range()
    start, end = (_LOWEST, low) if low - _LOWEST >= 1_000 else (high + 1, 65_536)
    if end - start < 1_000:  # no room outside it: let the kernel choose
        with socket.socket() as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    for _ in range(500):
        port = _rng.randrange(start, end)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port between {start} and {end}")

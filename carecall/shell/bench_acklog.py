"""Where an alarm's ack time goes: the gateway's own share (issue 15, attribution).

The bench times an alarm from its device's publish to the ``received`` ack back, through
the broker both ways. Each gateway worker also logs, per ack, the time from its own
receipt of the event to handing the ack to its broker client (the commit in between):
``<stats>.acks.f32``, one float32 of milliseconds per ack, appended with each stats
write. A phase reads the slice its alarms produced and prints it beside the end-to-end
figure, so a slow ack shows whether the gateway (its queue, the database commit) or the
rest (MQTT, the bench's own client, the machine's scheduling) took the time.
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any

__all__ = ["AckLog", "ack_log_path", "ack_slice_ms", "acks_logged"]


def ack_log_path(stats_path: Path) -> Path:
    return stats_path.with_suffix(".acks.f32")


class AckLog:
    """The worker's side: append the ack times not written yet (the list only grows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0

    def append(self, latencies_ms: list[float]) -> int:
        new = latencies_ms[self.written :]
        if new:
            with self.path.open("ab") as fh:
                array("f", new).tofile(fh)
            self.written += len(new)
        return self.written


def ack_slice_ms(path: Path, start: int, end: int | None = None) -> list[float]:
    """Ack times ``start`` to ``end`` (indices of acks) from a worker's log."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    values = array("f")
    values.frombytes(data[: len(data) - len(data) % 4])
    return [float(v) for v in values[start:end]]


def acks_logged(stats: dict[str, Any]) -> int:
    """How many ack times a worker has written (its stats snapshot)."""
    gw = stats.get("gateway") or {}
    return int(gw.get("acks_logged", 0))

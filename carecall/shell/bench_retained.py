"""The real target's retained messages: what a ``carecall bench --target real`` run leaves
retained on the machine's Mosquitto is cleared at its end (carecall/shell/bench_targets.py
calls this in its clean-up, so also on an error, Ctrl-C or SIGTERM).

The bench's own devices publish nothing retained today, but its gateways answer any
``online`` status of a known device with a retained ``config``, and a broker keeps every
retained message for good: each gateway subscribing later, a test's or another bench's,
is replayed all of them (one unknown-device lookup each). So the run's device ids are
swept (``simulators.retained.sweep``: only topics that hold something are emptied).
"""

from __future__ import annotations

from collections.abc import Callable

from carecall.shell.fleet_registry import Fleet
from simulators.retained import SweepReport, sweep


def run_device_ids(fleet: Fleet, fleets: dict[str, Fleet]) -> list[str]:
    """Every device id a run registered (its phases' homes and load generators included):
    whatever the broker retains under them is the run's to clear."""
    ids: set[str] = set()
    for f in (fleet, *fleets.values()):
        ids.update(f.devices)
        ids.add(f.loadgen_id)
    return sorted(ids)


def clear_run_retained(
    host: str, port: int, device_ids: list[str], say: Callable[[str], None], timeout_s: float = 30.0
) -> SweepReport | None:
    """Sweep the run's retained ``status`` and ``config`` messages off the broker, within
    ``timeout_s``; a failure is reported, not raised (the run's figures stand)."""
    say(f"clearing retained messages of the run's {len(device_ids):,} devices on {host}:{port} …")
    try:
        report = sweep(host, port, device_ids, timeout_s=timeout_s)
    except (OSError, TimeoutError, PermissionError) as exc:  # ConnectionError is an OSError
        say(f"retained messages of the run NOT cleared: {exc}")
        return None
    say(report.line())
    return report

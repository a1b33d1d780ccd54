"""Readings under overload: merged first, then shed, always counted (issue 15).

The readings' queue (the telemetry connection's incoming messages) grows when readings
come faster than the gateway takes them. A reading is the device's latest state and the
next one replaces it (docs/protocol.md), so past ``shed_above`` queued readings a new
reading from a device that already has one waiting is merged into that one (latest value
per metric, the newer time) instead of queued behind it: the device keeps its place in
line and no metric it reported is lost, only the intermediate values. Past
``drop_above`` a reading from a device with nothing queued is dropped. Every merge and
every drop is counted (``carecall_gateway_readings_shed_total``, and the gateway's
periodic ``gateway.readings_shed`` log line). Alarms never pass through this queue.

What a merge costs the rules (device_gateway/rules.py): they see one reading where the
device sent several, so a run of out-of-range vitals counts fewer readings in a row and
its ``vital_alert`` comes later (never earlier); the timers (out of bed, no movement,
battery) see the same values at the same times.

This module decides (pure); device_gateway/readings_queue.py is the queue that asks it.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

from device_gateway import protocol as p
from device_gateway.telemetry import fast_telemetry

__all__ = ["Admit", "admit_reading", "merge_readings"]


class Admit(Enum):
    queue = "queue"  # at the back of the line
    merge = "merge"  # into the device's reading already waiting
    drop = "drop"  # counted and dropped


def admit_reading(queued: int, *, shed_above: int, drop_above: int, device_waiting: bool) -> Admit:
    """What to do with a new reading when ``queued`` readings wait already and the
    device has one of them (``device_waiting``) or not."""
    if queued < shed_above:
        return Admit.queue
    if device_waiting:
        return Admit.merge
    if queued < drop_above:
        return Admit.queue
    return Admit.drop


def merge_readings(older: bytes, newer: bytes, max_bytes: int) -> bytes | None:
    """One reading holding the latest value of every metric of both, at the newer time;
    None when either is not the ordinary shape (the full parser must see it, and may
    reject it) or the merge would not be a valid reading."""
    a = fast_telemetry(older, max_bytes)
    b = fast_telemetry(newer, max_bytes)
    if a is None or b is None:
        return None
    metrics = {**a[1], **b[1]}
    if len(metrics) > p.MAX_METRICS:
        return None
    body: dict[str, Any] = {"metrics": metrics}
    if b[0] is not None:
        body["ts"] = b[0]
    out = json.dumps(body, separators=(",", ":")).encode()
    return out if len(out) <= max_bytes else None

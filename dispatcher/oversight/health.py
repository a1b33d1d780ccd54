"""Device health: a dead hub or an untested button is a bed with no emergency call.

Hours offline in a period come from the stored ``offline`` / ``online`` supervision
events (their ``received_at``: when the platform recorded the change), with the state at
the start of the period taken from the last such event before it. The rest (battery,
last test, last seen) is the gateway's current device state.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from device_gateway.supervision import maintenance_due
from dispatcher.oversight.targets import TESTING_KINDS

__all__ = ["DeviceFacts", "device_rows", "offline_seconds", "weekly_test_overdue"]


def weekly_test_overdue(
    kind: str,
    last_test_at: datetime | None,
    registered_at: datetime,
    now: datetime,
    *,
    days: int,
    tested_kinds: Collection[str] = TESTING_KINDS,
) -> bool:
    """Whether a device is overdue for its weekly test call. Only kinds that send test
    calls (buttons and pull cords, smoke, gas and water detectors by default) can be:
    a hub, watch, radar, mattress or door contact never sends one, so flagging it would
    bury the untested buttons under devices nobody can fix."""
    return kind in tested_kinds and maintenance_due(last_test_at, registered_at, now, days=days)


def offline_seconds(
    changes: Sequence[tuple[datetime, str]],
    *,
    start: datetime,
    end: datetime,
    offline_at_start: bool,
) -> float:
    """Seconds offline inside [start, end) from time-ordered (at, 'offline'|'online')
    changes inside the window. Repeated 'offline' while offline changes nothing (several
    gateway copies may each record one); so does 'online' while online."""
    total = 0.0
    down_since: datetime | None = start if offline_at_start else None
    for at, kind in sorted(changes):
        at = min(max(at, start), end)
        if kind == "offline" and down_since is None:
            down_since = at
        elif kind == "online" and down_since is not None:
            total += (at - down_since).total_seconds()
            down_since = None
    if down_since is not None:
        total += (end - down_since).total_seconds()
    return total


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    id: str
    home_id: str
    station_id: str
    street_id: str | None
    kind: str
    enabled: bool
    created_at: datetime
    online: bool | None
    offline_since: datetime | None
    last_seen_at: datetime | None
    battery_pct: float | None
    last_test_at: datetime | None
    offline_s_in_period: float
    rejected_in_period: int
    station_name: str = ""


def device_rows(
    devices: Sequence[DeviceFacts],
    *,
    now: datetime,
    test_every_days: int,
    low_battery_pct: float,
    tested_kinds: Collection[str] = TESTING_KINDS,
) -> list[dict[str, Any]]:
    """One row per device, worst first: offline now, then untested, then low battery."""
    rows: list[dict[str, Any]] = []
    for d in devices:
        offline_now = d.online is False and d.offline_since is not None
        sends_tests = d.kind in tested_kinds
        untested = weekly_test_overdue(
            d.kind, d.last_test_at, d.created_at, now, days=test_every_days, tested_kinds=tested_kinds
        )
        low = d.battery_pct is not None and d.battery_pct <= low_battery_pct
        rows.append(
            {
                "device_id": d.id,
                "home_id": d.home_id,
                "station_id": d.station_id,
                "station_name": d.station_name or d.station_id,
                "street_id": d.street_id,
                "kind": d.kind,
                "enabled": d.enabled,
                "offline_now": offline_now,
                "offline_since": d.offline_since.isoformat() if offline_now and d.offline_since else None,
                "hours_offline": round(d.offline_s_in_period / 3600.0, 2),
                "battery_pct": d.battery_pct,
                "low_battery": low,
                "last_test_at": d.last_test_at.isoformat() if d.last_test_at else None,
                "sends_tests": sends_tests,
                "not_tested": untested,
                "test_every_days": test_every_days if sends_tests else None,
                "last_seen_at": d.last_seen_at.isoformat() if d.last_seen_at else None,
                "rejected_messages": d.rejected_in_period,
            }
        )
    rows.sort(
        key=lambda r: (
            not r["offline_now"],
            not r["not_tested"],
            not r["low_battery"],
            -r["hours_offline"],
            r["device_id"],
        )
    )
    return rows

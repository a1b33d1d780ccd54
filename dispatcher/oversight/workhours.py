"""Working-hours arithmetic for device trouble (pure, no I/O).

Trouble calls (low battery, offline, power, tamper) are not emergencies: they are graded
against their own target, acknowledged within N *working* hours (config/oversight.yaml
``trouble``), where only the hours between ``start`` and ``end`` local time on the
working days count. A low battery reported at 23:00 with an 08:00–18:00 day and a 4 h
target is due at 12:00 the next working day.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dispatcher.oversight.targets import TroubleTarget

__all__ = ["trouble_state", "working_seconds"]


def working_seconds(start: datetime, end: datetime, target: TroubleTarget, timezone: str) -> float:
    """Seconds of working time inside [start, end) in ``timezone``'s local calendar;
    0 when ``end`` is not after ``start``. Both instants must be timezone-aware."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("working_seconds needs timezone-aware instants")
    if end <= start:
        return 0.0
    tz = ZoneInfo(timezone)
    days = target.weekdays
    day = start.astimezone(tz).date()
    last = end.astimezone(tz).date()
    total = 0.0
    while day <= last:
        if day.weekday() in days:
            lo = datetime.combine(day, target.start, tzinfo=tz)
            hi = datetime.combine(day, target.end, tzinfo=tz)
            a, b = max(lo, start), min(hi, end)
            if b > a:
                total += (b - a).total_seconds()
        day += timedelta(days=1)
    return total


def trouble_state(
    start: datetime,
    acknowledged: datetime | None,
    waited_until: datetime,
    target: TroubleTarget,
    timezone: str,
) -> bool | None:
    """True met, False missed, None not applicable, as for the answer targets but in
    working hours: acknowledged within the limit is met; not acknowledged and still
    waiting (or closed) after more working time than the limit is missed; a trouble that
    cleared itself (device back online) inside the limit is not applicable."""
    limit_s = target.acknowledge_within_h * 3600.0
    if acknowledged is not None:
        return working_seconds(start, acknowledged, target, timezone) <= limit_s
    if working_seconds(start, waited_until, target, timezone) > limit_s:
        return False
    return None

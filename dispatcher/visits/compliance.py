"""Visit compliance per station and month (pure: no I/O).

A visit belongs to the local month its window starts in (a monthly visit to its month, a
weekly one to the month of its Monday, a follow-up to the month its call closed). Per
station: ``due`` (every visit not cancelled), ``done_on_time`` (done before its due
time), ``late`` (done, but after its due time), ``missed`` (not done and its due time has
passed as of ``now``), ``open`` (not done, not yet due), ``cancelled``, and the residents
with at least one visit due that month and none done (``residents_not_visited``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ["StationMonth", "VisitFact", "compliance", "month_label", "parse_month"]


@dataclass(frozen=True)
class VisitFact:
    station_id: str
    resident_id: str
    window_start: datetime
    due_at: datetime
    status: str
    done_at: datetime | None


@dataclass
class StationMonth:
    station_id: str
    due: int = 0
    done_on_time: int = 0
    late: int = 0
    missed: int = 0
    open: int = 0
    cancelled: int = 0
    residents_not_visited: list[str] = field(default_factory=list)

    @property
    def on_time_rate(self) -> float | None:
        return None if self.due == 0 else round(self.done_on_time / self.due, 4)


def parse_month(text: str) -> tuple[int, int]:
    """``YYYY-MM`` → (year, month); anything else raises ValueError with a clear message."""
    parts = text.split("-")
    if len(parts) != 2 or len(parts[0]) != 4 or len(parts[1]) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"month must look like 2026-12, not {text!r}")
    year, month = int(parts[0]), int(parts[1])
    if not 1 <= month <= 12 or year < 2000:
        raise ValueError(f"no such month: {text!r}")
    return year, month


def month_label(at: datetime, tz: ZoneInfo) -> str:
    local = at.astimezone(tz)
    return f"{local.year:04d}-{local.month:02d}"


def compliance(visits: Iterable[VisitFact], *, month: str, tz: ZoneInfo, now: datetime) -> list[StationMonth]:
    """The figures of ``month`` (``YYYY-MM``, local to ``tz``) per station, sorted by station."""
    parse_month(month)
    out: dict[str, StationMonth] = {}
    wanted: dict[str, set[str]] = {}
    visited: dict[str, set[str]] = {}
    for v in visits:
        if month_label(v.window_start, tz) != month:
            continue
        fig = out.setdefault(v.station_id, StationMonth(v.station_id))
        if v.status == "cancelled":
            fig.cancelled += 1
            continue
        fig.due += 1
        wanted.setdefault(v.station_id, set()).add(v.resident_id)
        if v.status == "done" and v.done_at is not None:
            visited.setdefault(v.station_id, set()).add(v.resident_id)
            if v.done_at < v.due_at:
                fig.done_on_time += 1
            else:
                fig.late += 1
        elif now >= v.due_at:
            fig.missed += 1
        else:
            fig.open += 1
    for sid, fig in out.items():
        fig.residents_not_visited = sorted(wanted.get(sid, set()) - visited.get(sid, set()))
    return [out[k] for k in sorted(out)]

"""Visit compliance recomputed from the audit log (pure: no I/O).

What was *due* comes from the visits rows' plan periods (``window_start``, ``due_at``:
fixed when the visit was generated and never changed); what *happened* comes from the
audit log only: a ``visit_done`` row (its time against the due time: on time or late), a
``visit_cancelled`` row, ``visit_escalated`` rows (level 1 station manager, level 2
street). A visit with neither done nor cancelled row is missed once its due time has
passed, else open. The counting itself is dispatcher/visits/compliance.py's (the same
code the visits report runs over the table), so the two can only disagree when the table
and the audit log do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dispatcher.visits.compliance import StationMonth, VisitFact, compliance, month_label

__all__ = [
    "VisitAuditRow",
    "VisitDue",
    "compliance_rows",
    "facts_from_audit",
    "not_visited_rows",
    "visit_compliance",
]

VISIT_KINDS = ("visit_done", "visit_cancelled", "visit_escalated")


@dataclass(frozen=True, slots=True)
class VisitDue:
    """A visit as planned: whose, where, and its period."""

    visit_id: int
    station_id: str
    resident_id: str
    window_start: datetime
    due_at: datetime


@dataclass(frozen=True, slots=True)
class VisitAuditRow:
    at: datetime
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def visit_id(self) -> int | None:
        value = self.detail.get("visit_id")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class _Outcome:
    done_at: datetime | None = None
    cancelled: bool = False
    escalation: int = 0


def _outcomes(rows: Iterable[VisitAuditRow]) -> dict[int, _Outcome]:
    """Per visit: the first done time, whether it was cancelled, its highest escalation."""
    done: dict[int, datetime] = {}
    cancelled: set[int] = set()
    level: dict[int, int] = defaultdict(int)
    for r in rows:
        vid = r.visit_id
        if vid is None:
            continue
        if r.kind == "visit_done" and (vid not in done or r.at < done[vid]):
            done[vid] = r.at
        elif r.kind == "visit_cancelled":
            cancelled.add(vid)
        elif r.kind == "visit_escalated":
            raw = r.detail.get("level", 1)
            level[vid] = max(level[vid], raw if isinstance(raw, int) and not isinstance(raw, bool) else 1)
    ids = set(done) | cancelled | set(level)
    return {v: _Outcome(done.get(v), v in cancelled and v not in done, level[v]) for v in ids}


def facts_from_audit(visits: Iterable[VisitDue], rows: Iterable[VisitAuditRow]) -> list[VisitFact]:
    """The visits as compliance.VisitFact, their status and done time read from the audit
    rows (done wins over cancelled: a done visit cannot be cancelled afterwards)."""
    seen = _outcomes(rows)
    out: list[VisitFact] = []
    for v in visits:
        o = seen.get(v.visit_id, _Outcome())
        status = "done" if o.done_at is not None else "cancelled" if o.cancelled else "due"
        out.append(VisitFact(v.station_id, v.resident_id, v.window_start, v.due_at, status, o.done_at))
    return out


def visit_compliance(
    visits: Iterable[VisitDue],
    rows: Iterable[VisitAuditRow],
    *,
    month: str,
    tz: ZoneInfo,
    now: datetime,
) -> tuple[list[StationMonth], dict[str, int]]:
    """compliance.compliance over the audit-derived facts, and per station the number of
    the month's visits escalated (a ``visit_escalated`` row at any level)."""
    planned = list(visits)
    audit = list(rows)
    figures = compliance(facts_from_audit(planned, audit), month=month, tz=tz, now=now)
    outcome = _outcomes(audit)
    escalated: dict[str, int] = defaultdict(int)
    for v in planned:
        if month_label(v.window_start, tz) == month and outcome.get(v.visit_id, _Outcome()).escalation > 0:
            escalated[v.station_id] += 1
    return figures, dict(escalated)


def not_visited_rows(
    figures: Iterable[StationMonth], station_names: Mapping[str, str], resident_names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The residents not visited, one row each (station, then resident id)."""
    return [
        {
            "station_id": f.station_id,
            "station_name": station_names.get(f.station_id, f.station_id),
            "resident_id": r,
            "resident_name": resident_names.get(r, r),
        }
        for f in figures
        for r in f.residents_not_visited
    ]


def compliance_rows(
    figures: Iterable[StationMonth],
    escalated: Mapping[str, int],
    station_names: Mapping[str, str],
    resident_names: Mapping[str, str],
) -> list[dict[str, Any]]:
    """Flat rows (one a station) for the report, the dashboard and the downloads; the
    residents not visited by name (then id), as one text cell too."""
    out: list[dict[str, Any]] = []
    for f in figures:
        names = [f"{resident_names.get(r, r)} ({r})" for r in f.residents_not_visited]
        out.append(
            {
                "station_id": f.station_id,
                "station_name": station_names.get(f.station_id, f.station_id),
                "due": f.due,
                "done_on_time": f.done_on_time,
                "late": f.late,
                "missed": f.missed,
                "open": f.open,
                "cancelled": f.cancelled,
                "visits_escalated": escalated.get(f.station_id, 0),
                "on_time_pct": None if f.due == 0 else round(100.0 * f.done_on_time / f.due, 2),
                "not_visited": len(f.residents_not_visited),
                "residents_not_visited": "; ".join(names),
            }
        )
    return out

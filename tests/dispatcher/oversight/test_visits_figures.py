"""Visit compliance from the audit log, against a month computed by hand (November 2026,
Asia/Shanghai; "now" 2026-12-03), and against dispatcher/visits/compliance.py run over
the same visits as the table holds them.

| visit | station | resident | period           | audit                         | counts as         |
| 1     | cm1     | r1       | month            | done 11-10                    | on time           |
| 2     | cm1     | r2       | month            | escalated 1; done 12-01 01:00 | late, escalated   |
| 3     | cm1     | r3       | month            | escalated 1 and 2             | missed, escalated |
| 4     | cm1     | r4       | week of Nov 23   | cancelled                     | cancelled         |
| 5     | cm2     | r5       | week of Nov 30   | –                             | open (due 12-07)  |
| 6     | cm2     | r6       | week of Oct 26   | done                          | October: no       |
| 7     | cm2     | r6       | month            | done 11-20 (and again 11-21)  | on time           |
cm1: due 3, on time 1, late 1, missed 1, cancelled 1, escalated 2, not visited r3.
cm2: due 2, on time 1, open 1, not visited r5.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from dispatcher.oversight.visits_figures import (
    VisitAuditRow,
    VisitDue,
    compliance_rows,
    not_visited_rows,
    visit_compliance,
)
from dispatcher.visits.compliance import StationMonth, VisitFact, compliance

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 3, 0, 0, tzinfo=UTC)
M_START, M_DUE = datetime(2026, 10, 31, 16, tzinfo=UTC), datetime(2026, 11, 30, 16, tzinfo=UTC)


def u(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


VISITS = [
    VisitDue(1, "cm1", "r1", M_START, M_DUE),
    VisitDue(2, "cm1", "r2", M_START, M_DUE),
    VisitDue(3, "cm1", "r3", M_START, M_DUE),
    VisitDue(4, "cm1", "r4", u(11, 22, 16), u(11, 29, 16)),
    VisitDue(5, "cm2", "r5", u(11, 29, 16), u(12, 6, 16)),
    VisitDue(6, "cm2", "r6", u(10, 25, 16), u(11, 1, 16)),
    VisitDue(7, "cm2", "r6", M_START, M_DUE),
]


def a(kind: str, at: datetime, vid: int, **detail: Any) -> VisitAuditRow:
    return VisitAuditRow(at, f"visit_{kind}", {"visit_id": vid, **detail})


AUDIT = [
    a("checked_in", u(11, 10), 1),
    a("done", u(11, 10, 1), 1, on_time=True),
    a("escalated", u(12, 1), 2, level=1),
    a("done", u(12, 1, 1), 2, on_time=False),
    a("escalated", u(12, 1), 3, level=1),
    a("escalated", u(12, 2), 3, level=2),
    a("cancelled", u(11, 24), 4, reason="in hospital"),
    a("done", u(10, 28), 6),
    a("done", u(11, 21), 7),
    a("done", u(11, 20), 7),
    VisitAuditRow(u(11, 5), "visit_done", {"visit_id": "7"}),  # not a visit id: ignored
]

# the same visits as the visits table holds them
TABLE = [
    VisitFact("cm1", "r1", M_START, M_DUE, "done", u(11, 10, 1)),
    VisitFact("cm1", "r2", M_START, M_DUE, "done", u(12, 1, 1)),
    VisitFact("cm1", "r3", M_START, M_DUE, "missed", None),
    VisitFact("cm1", "r4", u(11, 22, 16), u(11, 29, 16), "cancelled", None),
    VisitFact("cm2", "r5", u(11, 29, 16), u(12, 6, 16), "due", None),
    VisitFact("cm2", "r6", u(10, 25, 16), u(11, 1, 16), "done", u(10, 28)),
    VisitFact("cm2", "r6", M_START, M_DUE, "done", u(11, 20)),
]


def test_the_hand_computed_month() -> None:
    figures, escalated = visit_compliance(VISITS, AUDIT, month="2026-11", tz=TZ, now=NOW)
    assert figures == [
        StationMonth(
            "cm1", due=3, done_on_time=1, late=1, missed=1, open=0, cancelled=1, residents_not_visited=["r3"]
        ),
        StationMonth(
            "cm2", due=2, done_on_time=1, late=0, missed=0, open=1, cancelled=0, residents_not_visited=["r5"]
        ),
    ]
    assert escalated == {"cm1": 2}
    rows = compliance_rows(figures, escalated, {"cm1": "东街站"}, {"r3": "王芳"})
    assert rows[0] == {
        "station_id": "cm1",
        "station_name": "东街站",
        "due": 3,
        "done_on_time": 1,
        "late": 1,
        "missed": 1,
        "open": 0,
        "cancelled": 1,
        "visits_escalated": 2,
        "on_time_pct": 33.33,
        "not_visited": 1,
        "residents_not_visited": "王芳 (r3)",
    }
    assert (rows[1]["station_name"], rows[1]["visits_escalated"], rows[1]["on_time_pct"]) == ("cm2", 0, 50.0)
    assert not_visited_rows(figures, {}, {"r3": "王芳"}) == [
        {"station_id": "cm1", "station_name": "cm1", "resident_id": "r3", "resident_name": "王芳"},
        {"station_id": "cm2", "station_name": "cm2", "resident_id": "r5", "resident_name": "r5"},
    ]


def test_it_agrees_with_the_visits_tables_compliance() -> None:
    for month, now in (("2026-11", NOW), ("2026-10", NOW), ("2026-11", u(11, 15))):
        from_audit, _ = visit_compliance(VISITS, AUDIT, month=month, tz=TZ, now=now)
        assert from_audit == compliance(TABLE, month=month, tz=TZ, now=now)


def test_the_audit_log_wins_over_the_table() -> None:
    """A visit marked done in the table without its audit row is not counted as done."""
    figures, _ = visit_compliance(
        VISITS, [r for r in AUDIT if r.detail.get("visit_id") != 1], month="2026-11", tz=TZ, now=NOW
    )
    assert (figures[0].done_on_time, figures[0].missed, figures[0].residents_not_visited) == (
        0,
        2,
        ["r1", "r3"],
    )
    assert figures != compliance(TABLE, month="2026-11", tz=TZ, now=NOW)

"""Monthly visit compliance against a month computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dispatcher.visits.compliance import VisitFact, compliance, parse_month

SH = ZoneInfo("Asia/Shanghai")
DEC = datetime(2026, 12, 1, tzinfo=SH)  # local month start = 2026-11-30 16:00 UTC
JAN = datetime(2027, 1, 1, tzinfo=SH)


def v(
    station: str, resident: str, start: datetime, due: datetime, status: str, done: datetime | None = None
) -> VisitFact:
    return VisitFact(station, resident, start.astimezone(UTC), due.astimezone(UTC), status, done)


def test_a_hand_computed_december() -> None:
    week49_mon = datetime(2026, 11, 30, tzinfo=SH)  # belongs to November (its Monday)
    week50_mon = datetime(2026, 12, 7, tzinfo=SH)
    visits = [
        # cm1: r1 monthly done on time; r2 monthly done late (2 Jan); r3 monthly never done
        v("cm1", "r1", DEC, JAN, "done", datetime(2026, 12, 10, tzinfo=SH)),
        v("cm1", "r2", DEC, JAN, "done", datetime(2027, 1, 2, tzinfo=SH)),
        v("cm1", "r3", DEC, JAN, "missed"),
        # r4 weekly: week 50 done on time, week 49 is November's, a follow-up cancelled
        v("cm1", "r4", week50_mon, week50_mon + timedelta(days=7), "done", week50_mon + timedelta(days=2)),
        v("cm1", "r4", week49_mon, week49_mon + timedelta(days=7), "done", week49_mon + timedelta(days=1)),
        v("cm1", "r4", datetime(2026, 12, 20, tzinfo=SH), datetime(2026, 12, 21, tzinfo=SH), "cancelled"),
        # cm2: r5 follow-up closed 31 Dec 23:00 local (still December), not yet due at `now`
        v("cm2", "r5", datetime(2026, 12, 31, 23, tzinfo=SH), datetime(2027, 1, 1, 23, tzinfo=SH), "due"),
        # r6: its first local-December minute is still 30 Nov in UTC: counted in December
        v("cm2", "r6", DEC, JAN, "late"),
        # a November visit, ignored
        v("cm2", "r6", datetime(2026, 11, 1, tzinfo=SH), DEC, "done", datetime(2026, 11, 3, tzinfo=SH)),
    ]
    now = datetime(2027, 1, 1, 12, tzinfo=SH)
    cm1, cm2 = compliance(visits, month="2026-12", tz=SH, now=now)
    assert (cm1.station_id, cm1.due, cm1.done_on_time, cm1.late, cm1.missed, cm1.open, cm1.cancelled) == (
        "cm1",
        4,
        2,
        1,
        1,
        0,
        1,
    )
    assert cm1.residents_not_visited == ["r3"] and cm1.on_time_rate == 0.5
    assert (cm2.due, cm2.done_on_time, cm2.late, cm2.missed, cm2.open, cm2.cancelled) == (2, 0, 0, 1, 1, 0)
    assert cm2.residents_not_visited == ["r5", "r6"] and cm2.on_time_rate == 0.0
    [nov] = compliance(visits, month="2026-11", tz=SH, now=now)[1:]
    assert nov.station_id == "cm2" and nov.done_on_time == 1
    assert compliance(visits, month="2027-02", tz=SH, now=now) == []


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "26-12", "2026/12", "abcd-ef", "1999-12", ""])
def test_a_bad_month_is_refused_with_a_clear_message(bad: str) -> None:
    with pytest.raises(ValueError, match="month"):
        parse_month(bad)

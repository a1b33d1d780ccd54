"""Service-level breaches: which level of which order is late at a moment, once each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.orders.levels import Breach, OrderClock, breaches, deadlines

T0 = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
LEVELS = {"accept_within_s": 600, "start_by_s": 3600, "start_grace_s": 900, "done_within_s": 7200}


def clock(oid: int, status: str, **kw: object) -> OrderClock:
    return OrderClock(oid, status, T0, LEVELS, **kw)  # type: ignore[arg-type]


def test_each_status_has_its_pending_levels() -> None:
    booked = T0 + timedelta(hours=5)
    assert set(deadlines(clock(1, "created"))) == {"accept", "start"}
    assert deadlines(clock(1, "assigned", booked_for=booked))["start"] == booked + timedelta(seconds=900)
    assert set(deadlines(clock(1, "accepted"))) == {"start"}
    started = T0 + timedelta(minutes=30)
    assert deadlines(clock(1, "started", started_at=started)) == {"done": started + timedelta(hours=2)}
    for status in ("done", "confirmed", "closed", "cancelled"):
        assert deadlines(clock(1, status)) == {}


def test_breaches_at_a_moment_and_only_once() -> None:
    orders = [
        clock(1, "assigned"),
        clock(2, "accepted"),
        clock(3, "assigned", recorded=frozenset({"accept"})),
        clock(4, "started", started_at=T0),
        clock(5, "cancelled"),
    ]
    assert breaches(orders, T0 + timedelta(seconds=599)) == []
    at = T0 + timedelta(hours=1)
    assert breaches(orders, at) == [
        Breach(1, "accept", T0 + timedelta(seconds=600)),
        Breach(1, "start", at),
        Breach(2, "start", at),
        Breach(3, "start", at),
    ]


@given(
    st.sampled_from(["created", "assigned", "accepted", "started"]),
    st.integers(0, 20_000),
    st.integers(0, 20_000),
)
def test_a_breach_stays_a_breach_as_time_goes_on(status: str, s1: int, s2: int) -> None:
    o = clock(7, status, started_at=T0)
    early, late = sorted((s1, s2))
    first = {b.level for b in breaches([o], T0 + timedelta(seconds=early))}
    later = {b.level for b in breaches([o], T0 + timedelta(seconds=late))}
    assert first <= later
    recorded = clock(7, status, started_at=T0, recorded=frozenset(later))
    assert breaches([recorded], T0 + timedelta(seconds=late)) == []

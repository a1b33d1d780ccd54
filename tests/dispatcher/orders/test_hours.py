"""Opening hours: the text form, overnight ranges and day lists."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.orders.hours import parse_hours

MON = datetime(2026, 12, 7)  # a Monday (wall clock)


def at(day: int, hh: int, mm: int = 0) -> datetime:
    return MON + timedelta(days=day, hours=hh, minutes=mm)


def test_day_range() -> None:
    h = parse_hours("08:00-20:00")
    assert not h.open_at(at(0, 7, 59)) and h.open_at(at(0, 8)) and h.open_at(at(0, 19, 59))
    assert not h.open_at(at(0, 20))


def test_overnight_belongs_to_the_day_it_starts() -> None:
    h = parse_hours("fri 22:00-06:00")
    assert h.open_at(at(4, 22)) and h.open_at(at(5, 3)) and not h.open_at(at(5, 6))
    assert not h.open_at(at(4, 3)), "Friday 03:00 is Thursday night, not open"
    assert not h.open_at(at(5, 22))


def test_days_lists_and_wrapping_ranges() -> None:
    h = parse_hours("mon-fri 08:00-12:00,14:00-18:00; sat 09:00-12:00")
    assert h.open_at(at(0, 9)) and not h.open_at(at(0, 13)) and h.open_at(at(4, 17))
    assert h.open_at(at(5, 10)) and not h.open_at(at(5, 15)) and not h.open_at(at(6, 10))
    weekend = parse_hours("sat-mon 10:00-11:00")  # wraps past Sunday
    assert [weekend.open_at(at(d, 10, 30)) for d in range(7)] == [
        True,
        False,
        False,
        False,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("text", ["24h", "24/7", "00:00-24:00", " 24H "])
def test_always_open(text: str) -> None:
    h = parse_hours(text)
    assert all(h.open_at(at(d, hh, 30)) for d in range(7) for hh in range(24))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "8-20",
        "08:00",
        "25:00-26:00",
        "08:00-08:00",
        "24:00-06:00",
        "funday 08:00-09:00",
        "mon",
        "08:60-09:00",
        "x" * 301,
    ],
)
def test_bad_hours_are_refused_with_a_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_hours(text)


minutes = st.integers(0, 24 * 60 - 1)


def hhmm(x: int) -> str:
    return f"{x // 60:02d}:{x % 60:02d}"


@given(minutes, minutes, st.integers(0, 6), minutes)
def test_a_range_and_its_complement_never_overlap_and_cover_the_day(a: int, b: int, day: int, m: int) -> None:
    if a == b:
        return
    inside = parse_hours(f"{hhmm(a)}-{hhmm(b)}")
    outside = parse_hours(f"{hhmm(b)}-{hhmm(a)}")
    t = at(day, 0) + timedelta(minutes=m)
    assert inside.open_at(t) != outside.open_at(t)

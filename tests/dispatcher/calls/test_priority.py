"""Priority, joining and restores; the class order is a property, not a few examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.calls.priority import (
    REASONS,
    PriorityConfig,
    assess_priority,
    call_class_after_join,
    joins_call,
    opens_call,
    priority_rank,
    restore_clears,
)

CFG = PriorityConfig()
TYPES = st.sampled_from(
    [
        "sos",
        "fall",
        "vital_alert",
        "smoke",
        "gas",
        "water_leak",
        "inactivity",
        "bed_exit",
        "low_battery",
        "offline",
        "vendor_thing",
    ]
)


def prio(event_class: str, event_type: str = "sos", **kw: object) -> tuple[str, tuple[str, ...]]:
    args: dict[str, object] = {
        "capacity_level": 1,
        "living_alone": False,
        "night": False,
        "recent_calls_24h": 0,
    } | kw
    return assess_priority(event_class=event_class, event_type=event_type, cfg=CFG, **args)  # type: ignore[arg-type]


def test_opens_call() -> None:
    assert [c for c in ("emergency", "urgent", "info", "test", "trouble", "cancel") if opens_call(c)] == [
        "emergency",
        "urgent",
        "trouble",
    ]
    with pytest.raises(ValueError, match="info"):
        prio("info")


def test_emergency_examples() -> None:
    assert prio("emergency", "fall") == ("P2", ("EMERGENCY_EVENT", "LIFE_THREAT_TYPE"))
    assert prio("emergency", "fall", capacity_level=4) == (
        "P1",
        ("EMERGENCY_EVENT", "LIFE_THREAT_TYPE", "CAPACITY_LEVEL_4", "RAISED_TO_P1"),
    )
    assert prio("emergency", "smoke", night=True)[1] == (
        "EMERGENCY_EVENT",
        "LIFE_THREAT_TYPE",
        "SMOKE_GAS_HAZARD",
        "NIGHT_TIME",
        "RAISED_TO_P1",
    )
    assert prio("emergency", "sos", capacity_level=None)[0] == "P1"  # unassessed errs up
    assert prio("emergency", "sos", recent_calls_24h=2)[1][-2:] == (
        "REPEATED_CALLS",
        "RAISED_TO_P1",
    )
    # A leak needs two factors: it threatens the home before the person.
    assert prio("emergency", "water_leak", living_alone=True)[0] == "P2"
    assert prio("emergency", "water_leak", living_alone=True, night=True)[0] == "P1"


def test_urgent_and_trouble_examples() -> None:
    assert prio("urgent", "inactivity") == ("P3", ("URGENT_EVENT",))
    assert prio("urgent", "inactivity", living_alone=True) == (
        "P2",
        ("URGENT_EVENT", "LIVING_ALONE", "RAISED_TO_P2"),
    )
    assert prio("trouble", "low_battery", capacity_level=4, night=True) == ("P4", ("TROUBLE_ONLY",))


@given(
    event_type=TYPES,
    capacity=st.none() | st.integers(0, 4),
    alone=st.booleans(),
    night=st.booleans(),
    recent=st.integers(0, 50),
    other=st.tuples(st.none() | st.integers(0, 4), st.booleans(), st.booleans(), st.integers(0, 50)),
)
def test_class_order_never_inverts(
    event_type: str,
    capacity: int | None,
    alone: bool,
    night: bool,
    recent: int,
    other: tuple[int | None, bool, bool, int],
) -> None:
    """An emergency of the frailest-looking kind and a trouble event of the frailest
    resident: the emergency still ranks first, for any two profiles."""
    e, e_reasons = prio(
        "emergency",
        event_type,
        capacity_level=capacity,
        living_alone=alone,
        night=night,
        recent_calls_24h=recent,
    )
    oc, oa, on, orc = other
    u, _ = prio("urgent", event_type, capacity_level=oc, living_alone=oa, night=on, recent_calls_24h=orc)
    t, _ = prio("trouble", event_type, capacity_level=oc, living_alone=oa, night=on, recent_calls_24h=orc)
    assert priority_rank(e) <= priority_rank(u) < priority_rank(t)
    assert e in ("P1", "P2") and u in ("P2", "P3") and t == "P4"
    assert all(r in REASONS for r in e_reasons)


@given(
    capacity=st.none() | st.integers(0, 4),
    alone=st.booleans(),
    night=st.booleans(),
    recent=st.integers(0, 9),
)
def test_more_factors_never_lower_priority(
    capacity: int | None, alone: bool, night: bool, recent: int
) -> None:
    base, _ = prio(
        "emergency",
        "fall",
        capacity_level=capacity,
        living_alone=False,
        night=night,
        recent_calls_24h=recent,
    )
    more, _ = prio(
        "emergency",
        "fall",
        capacity_level=capacity,
        living_alone=True,
        night=night,
        recent_calls_24h=recent,
    )
    assert priority_rank(more) <= priority_rank(base)


def test_night_hours_wrap() -> None:
    assert [h for h in range(24) if CFG.is_night(h)] == [0, 1, 2, 3, 4, 5, 22, 23]


def join(event_class: str, call_class: str, gap: float = 30.0, event_type: str = "sos") -> bool:
    return joins_call(
        event_class=event_class,
        event_type=event_type,
        call_event_class=call_class,
        seconds_since_last_event=gap,
        window_s=600.0,
    )


def test_joining() -> None:
    assert join("emergency", "emergency")  # SOS pressed again, smoke from a second sensor
    assert join("emergency", "urgent", event_type="fall")  # no movement, then a fall
    assert join("urgent", "emergency")
    assert join("trouble", "trouble", event_type="low_battery")
    assert not join("trouble", "emergency", event_type="low_battery")
    assert not join("emergency", "trouble")
    assert not join("emergency", "emergency", gap=601)
    assert join("emergency", "emergency", gap=-5)  # stored out of order
    assert not join("info", "emergency", event_type="door_open")
    assert not join("cancel", "emergency", event_type="cancel")
    assert not join("trouble", "trouble", event_type="online")  # restores clear, not join


def test_class_after_join_only_goes_up() -> None:
    assert call_class_after_join("urgent", "emergency") == "emergency"
    assert call_class_after_join("emergency", "urgent") == "emergency"
    assert call_class_after_join("trouble", "trouble") == "trouble"
    with pytest.raises(ValueError):
        call_class_after_join("emergency", "info")


def test_restore_clears() -> None:
    assert restore_clears("online") == "offline"
    assert restore_clears("power_restored") == "power_loss"
    assert restore_clears("sos") is None

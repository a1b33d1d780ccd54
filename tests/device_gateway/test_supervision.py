"""Device liveness: overdue after 3 intervals, offline once, online once, in turn."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_gateway.protocol import DEFAULT_CLASS, EVENT_ID_RE, EventClass
from device_gateway.supervision import (
    Liveness,
    SupervisionEvent,
    is_overdue,
    maintenance_due,
    on_uplink,
    on_will,
    start_watching,
    sweep,
)

T0 = datetime(2025, 11, 26, 10, 0, tzinfo=UTC)
HB = 60


def s(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def seen(device_id: str = "hub-1", at: datetime = T0) -> Liveness:
    return Liveness(device_id, online=True, last_seen=at, offline_since=None)


def test_overdue_exactly_after_three_intervals() -> None:
    assert not is_overdue(T0, HB, 3, s(179.999))
    assert is_overdue(T0, HB, 3, s(180))
    assert not is_overdue(None, HB, 3, s(10**6))
    assert is_overdue(T0, 4 * 3600, 3, s(12 * 3600)) and not is_overdue(T0, 4 * 3600, 3, s(3600))
    with pytest.raises(ValueError):
        is_overdue(T0, 0, 3, T0)
    with pytest.raises(ValueError):
        is_overdue(T0, HB, 0, T0)


def test_sweep_raises_offline_once_with_an_id_every_copy_agrees_on() -> None:
    assert sweep([(seen(), HB)], 3, s(179)) == []
    first = sweep([(seen(), HB)], 3, s(181))
    late = sweep([(seen(), HB)], 3, s(500))  # another copy, sweeping later
    assert len(first) == 1
    state, event = first[0]
    assert event == late[0][1]
    assert event.event_id == f"sup-offline-{ms(s(180))}" and re.match(EVENT_ID_RE, event.event_id)
    assert event.type == "offline" and event.at == s(180)
    assert event.data == {
        "reason": "silent",
        "last_seen": "2025-11-26T10:00:00.000+00:00",
        "heartbeat_s": HB,
        "intervals": 3,
    }
    assert state == Liveness("hub-1", online=False, last_seen=T0, offline_since=s(180))
    # repeated sweeps of the offline device raise nothing more
    assert sweep([(state, HB)], 3, s(600)) == []
    assert sweep([(state, HB)], 3, s(6000)) == []
    assert DEFAULT_CLASS[event.type] is EventClass.trouble


def test_sweep_keeps_order_and_heartbeats_per_device() -> None:
    devices = [(seen("button-1"), 4 * 3600), (seen("hub-2"), HB), (seen("radar-3"), HB)]
    result = sweep(devices, 3, s(3600))
    assert [live.device_id for live, _ in result] == ["hub-2", "radar-3"]


def test_will_goes_offline_once_and_return_goes_online_with_duration() -> None:
    state, event = on_will(seen(), s(30))
    assert event is not None and event.type == "offline"
    assert event.event_id == f"sup-offline-{ms(s(30))}"
    assert event.data == {"reason": "will", "last_seen": "2025-11-26T10:00:00.000+00:00"}
    again, repeat = on_will(state, s(40))
    assert repeat is None and again == state
    assert sweep([(state, HB)], 3, s(900)) == []
    back, online = on_uplink(state, s(30 + 125.5))
    assert online == SupervisionEvent(
        event_id=f"sup-online-{ms(s(30))}",
        type="online",
        data={"offline_since": "2025-11-26T10:00:30.000+00:00", "offline_s": 125},
        at=s(155.5),
    )
    assert back == Liveness("hub-1", online=True, last_seen=s(155.5), offline_since=None)
    _, nothing = on_uplink(back, s(200))
    assert nothing is None


def test_uplinks_keep_a_device_alive() -> None:
    state = seen()
    for t in range(60, 3600, 60):
        state, event = on_uplink(state, s(t))
        assert event is None
        assert sweep([(state, HB)], 3, s(t + 179)) == []
    assert state.last_seen == s(3540)


def test_stale_will_and_late_uplink_are_ignored() -> None:
    state, _ = on_uplink(seen(), s(100))
    stale, event = on_will(state, s(90))  # the device has been heard since
    assert event is None and stale.online
    offline, _ = on_will(state, s(200))
    # a message received before the outage began, processed late, does not end it
    still, event = on_uplink(offline, s(150))
    assert event is None and not still.online and still.last_seen == s(150)
    _, event = on_uplink(still, s(201))
    assert event is not None and event.type == "online"


def test_never_connected_device_goes_offline_from_registration() -> None:
    state = start_watching("button-9", T0)
    [(off, event)] = sweep([(state, 4 * 3600)], 3, s(12 * 3600))
    assert event.type == "offline" and event.data["last_seen"] == "2025-11-26T10:00:00.000+00:00"
    assert not off.online


def test_liveness_invariants_and_naive_times() -> None:
    with pytest.raises(ValueError):
        Liveness("d", online=True, last_seen=T0, offline_since=T0)
    with pytest.raises(ValueError):
        Liveness("d", online=False, last_seen=T0, offline_since=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        on_uplink(seen(), datetime(2025, 1, 1))


def test_maintenance_due_after_seven_days_without_test() -> None:
    week = timedelta(days=7)
    assert not maintenance_due(None, T0, T0 + week - timedelta(seconds=1))
    assert maintenance_due(None, T0, T0 + week)
    assert not maintenance_due(T0 + week, T0, T0 + week + timedelta(days=6))
    assert maintenance_due(T0 + week, T0, T0 + 2 * week)
    assert maintenance_due(None, T0, T0 + timedelta(days=2), days=2)


_ops = st.lists(
    st.tuples(st.sampled_from(["uplink", "will", "sweep"]), st.integers(-300, 3000)),
    max_size=60,
)


@given(_ops)
def test_offline_and_online_alternate_starting_with_offline(ops: list[tuple[str, int]]) -> None:
    state = seen()
    events: list[SupervisionEvent] = []
    now = T0
    for op, step in ops:
        now = now + timedelta(seconds=step)  # steps may go back: late, reordered messages
        if op == "uplink":
            state, event = on_uplink(state, now)
            events += [event] if event else []
        elif op == "will":
            state, event = on_will(state, now)
            events += [event] if event else []
        else:
            swept = sweep([(state, HB)], 3, now)
            assert sweep([(live, HB) for live, _ in swept], 3, now) == []
            if swept:
                [(state, event)] = swept
                events.append(event)
    types = [e.type for e in events]
    assert types == ["offline", "online"] * (len(types) // 2) + ["offline"] * (len(types) % 2)
    assert state.online == (len(types) % 2 == 0)
    for off, on in zip(events[::2], events[1::2], strict=False):
        assert on.event_id == off.event_id.replace("sup-offline-", "sup-online-")
        assert on.data["offline_s"] >= 0 and on.at > off.at
    assert len({e.event_id for e in events}) == len(events)

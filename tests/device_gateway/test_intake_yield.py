"""When the gateway's intake lets the loop run (device_gateway/service.py ``yield_after``).

While an event is being stored, a message that is not itself an event (junk, a reading,
a status) costs a loop turn, so the commit's steps never wait behind a flood; an event
for the writer does not, up to ``YIELD_EVERY`` a turn: one turn per event held a storm's
intake to the loop's turn rate in the one-process target (issue 15)."""

from __future__ import annotations

from device_gateway.service import YIELD_EVERY, yield_after


def test_events_are_taken_in_bulk_while_an_event_is_being_stored() -> None:
    assert not yield_after(1, alarm_work=True, took_event=True)
    assert yield_after(YIELD_EVERY, alarm_work=True, took_event=True)


def test_anything_else_yields_at_once_while_an_event_is_being_stored() -> None:
    assert yield_after(1, alarm_work=True, took_event=False)


def test_without_alarm_work_every_yield_every_messages() -> None:
    assert [n for n in range(1, 2 * YIELD_EVERY + 1) if yield_after(n, False, False)] == [
        YIELD_EVERY,
        2 * YIELD_EVERY,
    ]

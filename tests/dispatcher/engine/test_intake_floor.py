"""The intake looks for waiting events from a floor that trails the events it claimed, not
from the first event ever stored (dispatcher/calls/claims.py, EVENT_FLOOR_MARGIN): the old
claim scanned the whole history every round (74 ms at 200,000 events on PostgreSQL, and
growing). A look from the very start at start-up and every INTAKE_SWEEP_S still takes an
event waiting below the floor: one an admin put back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.models import DeviceEvent
from dispatcher.calls import claims
from dispatcher.calls.models import CallEvent, EventIntake
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.notifiers import LogNotifier
from tests.dispatcher.engine.support import T0, ManualClock, store_event


def test_the_floor_trails_the_first_event_claimed_and_never_falls() -> None:
    m = claims.EVENT_FLOOR_MARGIN
    assert claims.next_floor(0, []) == 0
    assert claims.next_floor(0, [m + 10, m + 11]) == 10
    assert claims.next_floor(50, [m + 10]) == 50, "up only"
    assert claims.next_floor(50, []) == 50


async def _handled(maker: async_sessionmaker[AsyncSession]) -> int:
    async with maker() as s:
        return int(await s.scalar(select(func.count()).select_from(EventIntake)) or 0)


async def test_a_put_back_event_below_the_floor_is_taken_at_the_next_look_from_the_start(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, _clock, _ = setup
    monkeypatch.setattr(claims, "EVENT_FLOOR_MARGIN", 2)
    for i in range(12):
        await store_event(
            maker, "h1-btn", f"e{i}", "heartbeat_missed" if i % 2 else "sos", T0 + timedelta(seconds=i)
        )
    while await d.intake_once(limit=5):
        pass
    assert await _handled(maker) == 12
    async with maker() as s:
        ids = list(await s.scalars(select(DeviceEvent.id).order_by(DeviceEvent.id)))
    # the last batch began at ids[10]: the floor trails it by the margin
    assert d._intake_floor == ids[10] - 2

    # an event with an id below the floor commits only now (its id was drawn long ago):
    # the first id, freed for it, and the same shape an admin's put-back event has
    async with maker() as s, s.begin():
        first = await s.get(DeviceEvent, ids[0])
        assert first is not None
        late = {c.key: getattr(first, c.key) for c in DeviceEvent.__table__.columns}
        await s.execute(delete(EventIntake).where(EventIntake.event_pk == ids[0]))
        await s.execute(delete(CallEvent).where(CallEvent.event_pk == ids[0]))
        await s.delete(first)
    async with maker() as s, s.begin():
        s.add(DeviceEvent(**{**late, "event_id": "e-late"}))
    await store_event(maker, "h1-btn", "e-new", "sos", T0 + timedelta(seconds=30))
    assert await d.intake_once() == 1, "a new event is found from the floor"
    assert await d.intake_once() == 0, "the late one lies below it: not looked for yet"
    monkeypatch.setattr(d, "_intake_swept", float("-inf"))  # INTAKE_SWEEP_S have passed
    assert await d.intake_once() == 1, "the look from the start takes it"
    async with maker() as s:
        taken = await s.get(EventIntake, ids[0])
    assert taken is not None
    assert await _handled(maker) == 13
    assert d._intake_floor >= ids[10] - 2, "and the floor did not fall back to it"

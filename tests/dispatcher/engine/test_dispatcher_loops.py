"""A dispatcher copy runs the loops its settings name (``dispatcher_loops``; ``carecall
dispatcher --loops``): one copy can take the alarm lane alone (intake: stored event → call →
consoles) while another fires the timers and sends the outbox, each told of the other's
work over the bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from config.settings import DISPATCHER_LOOPS, SettingsError, load_settings
from dispatcher.calls.models import Timer
from dispatcher.engine.process import Dispatcher
from dispatcher.health.stall import LOOPS
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from tests.dispatcher.engine.support import T0, ManualClock, store_event

REST = "timers,outbox,watchdog,visits,order_levels"


def test_the_setting_names_known_loops_in_their_order() -> None:
    assert LOOPS == DISPATCHER_LOOPS, "the stall monitor watches every loop a copy can run"
    s = load_settings(database_url="sqlite:///unused.db", dispatcher_loops="outbox, intake")
    assert s.dispatcher_loops == "intake,outbox"
    assert s.dispatcher_loop_set == frozenset({"intake", "outbox"})
    assert load_settings(database_url="sqlite:///unused.db").dispatcher_loop_set == frozenset(LOOPS)
    for bad in ("bogus", "intake,bogus", "", " , "):
        with pytest.raises(SettingsError, match=r"(?i)dispatcher_loops"):
            load_settings(database_url="sqlite:///unused.db", dispatcher_loops=bad)


async def _until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


async def test_an_intake_copy_and_a_copy_of_the_rest_share_the_work(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: async_sessionmaker[AsyncSession]
) -> None:
    d, clock, notifier = setup
    bus = MemoryBus()

    def copy(name: str, loops: str) -> Dispatcher:
        settings = d.settings.model_copy(update={"instance": name, "dispatcher_loops": loops})
        settings = settings.model_validate(settings.model_dump())  # validated as a file would be
        return Dispatcher(
            settings=settings, maker=maker, bus=bus, clock=clock, mqtt=None, notifier=notifier, ctx=d.ctx
        )

    lane, rest = copy("lane", "intake"), copy("rest", REST)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(x.run(stop)) for x in (lane, rest)]
    try:
        await asyncio.sleep(0.2)  # both subscribed
        await store_event(maker, "h1-btn", "e1", "sos", T0)
        await bus.publish("events", {"count": 1})  # what the gateway says after storing it

        async def timers() -> list[Timer]:
            async with maker() as s:
                return list((await s.scalars(select(Timer).order_by(Timer.step, Timer.repeat))).all())

        async def opened() -> bool:
            return any(t.step == 0 and t.status == "fired" for t in await timers())

        await _until(opened)
        first = [t for t in await timers() if t.step == 0]
        assert [t.fired_by for t in first] == [lane.name], "the call and its opening alert: the intake copy's"

        async def alert_sent() -> bool:
            async with maker() as s:
                n = await s.scalar(select(Notification).where(Notification.purpose == "alert_station"))
            return n is not None and n.status == "sent"

        await _until(alert_sent)  # queued by the intake copy, sent by the other one

        clock.advance(2.5)  # the reminder (after 2 s) is due: only the other copy fires timers

        async def reminded() -> bool:
            return any(t.step == 1 and t.status == "fired" for t in await timers())

        await _until(reminded)
        fired = {t.fired_by for t in await timers() if t.status == "fired" and t.step != 0}
        assert fired == {rest.name}, fired
        assert set(lane.heartbeats) == {"intake"}, lane.heartbeats
        assert "intake" not in rest.heartbeats and {"timers", "outbox"} <= set(rest.heartbeats)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)

"""The demo history's back pressure keeps the clock crawling (×1) while the simulated
staff have work due (carecall/shell/demo_history.py, ``back_pressure``): their own holds
end at fixed simulated moments, and an answer still waiting for the database when its hold
ran out saw the clock race on at x10,000 (answers hours late in the history's figures)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import CatchUpClock
from carecall.shell.demo_history import Phase, back_pressure
from carecall.shell.runtime import Parts


def _idle_phase() -> Phase:
    """A phase whose gateway and dispatcher have nothing in flight."""
    gateway = SimpleNamespace(stats=SimpleNamespace(events_stored=0))
    dispatcher = SimpleNamespace(stats=SimpleNamespace(events=0))
    return Phase(Parts(cast(Any, gateway), cast(Any, dispatcher), asyncio.Event()))


async def _advance_over(clock: CatchUpClock, real_s: float) -> float:
    before = clock.now()
    await asyncio.sleep(real_s)
    return (clock.now() - before).total_seconds()


async def test_the_clock_crawls_while_the_staff_have_work_due(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    clock = CatchUpClock(start=datetime.now(UTC) - timedelta(days=2), fast=10_000, fine=100)
    phase = _idle_phase()
    busy = True
    phase.staff_busy = lambda: busy
    stop = asyncio.Event()
    task = asyncio.create_task(back_pressure(clock, phase, stop, maker))
    try:
        await asyncio.sleep(0.1)  # its first look
        held = await _advance_over(clock, 0.5)
        busy = False
        await asyncio.sleep(0.05)  # the last hold (3 simulated s) runs out
        free = await _advance_over(clock, 0.3)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    # x1 while busy (0.5 s; slack for a loaded machine's late ticks: at the fine rate, x100,
    # it would be 50 s, which is what an answer waiting 0.5 s for SQLite used to gain),
    # x10,000 after (3,000 s)
    assert held < 10, held
    assert free > 1_500, free


async def test_the_operators_are_busy_from_a_change_on_the_bus_until_they_have_read_it(
    maker: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    """A new call wakes the operators (the bus); until their look has read it, its answer
    is not held yet, so they count as busy (the clock keeps fine time) all through that
    look, not only until it begins: a first read waiting 0.6 s real for the database was
    1.7 simulated hours at x10,000."""
    from carecall.shell.sim_operators import SimulatedOperators
    from config.settings import load_settings
    from dispatcher.engine.process import load_context

    clock = CatchUpClock(start=datetime.now(UTC) - timedelta(days=2), fast=10_000, fine=100)
    ops = SimulatedOperators(maker=maker, clock=clock, ctx=load_context(load_settings(database_url=db_url)))
    seen: list[tuple[bool, bool]] = []  # (woken by the bus, busy while looking)

    async def look(stop: asyncio.Event | None = None) -> float | None:
        seen.append((bool(seen), ops.busy()))
        await asyncio.sleep(0.05)  # the look's reads
        return None

    ops.step = look  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(ops.run(stop))
    try:
        await asyncio.sleep(0.1)  # the first look (nothing on the bus)
        assert not ops.busy()
        ops._wake.set()  # what the bus listener does when a call opens
        assert ops.busy()
        for _ in range(100):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert not ops.busy()  # read: the call's own holds take over
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert seen[:2] == [(False, False), (True, True)], seen


def test_an_intake_correction_made_mid_batch_does_not_hide_later_events() -> None:
    """settle_intake believes the database when the counters say events wait and it says
    none do. Read while a dispatcher batch was committed but not yet counted (its count
    comes after the bus announcement), that added the batch to the offset a second time:
    from then on as many newly stored events were never "in flight", the clock ran on at
    x10,000 while they waited to become calls (calls opened two hours after the alarm)."""
    phase = _idle_phase()
    gateway, dispatcher = cast(Any, phase.gateway), cast(Any, phase.dispatcher)
    gateway.stats.events_stored = 5
    dispatcher.stats.events = 3  # two more are committed, not counted yet
    assert phase.backlog() == 2
    phase.intake_offset += 2  # settle_intake in that moment: the database has none waiting
    dispatcher.stats.events = 5  # the batch is counted
    assert phase.backlog() == 0
    gateway.stats.events_stored = 6  # a new alarm is stored
    assert phase.backlog() == 1  # work in flight: the clock keeps fine time
    dispatcher.stats.events = 6
    assert phase.backlog() == 0

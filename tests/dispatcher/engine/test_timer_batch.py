"""The timer loop's batch (issue 15, the alarm lane): a storm's escalation timers fire in
batches whose statements do not grow with the batch — one UPDATE for its fired timers and
one for its stale ones, the paging reads (pages of the calls, people of the stations, what
a page's message says) once for all its page_station timers — while every timer still
fires exactly once across dispatcher copies, with every audit row it always had."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.shell.fleet_registry import provision_fleet
from config.settings import load_settings
from device_gateway.store import insert_events
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls import timers
from dispatcher.calls.models import Call, Timer
from dispatcher.engine.process import Dispatcher, load_context
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.paging.models import Page
from dispatcher.registry.models import Home
from tests.dispatcher.engine.support import T0, ManualClock, store_event
from tests.dispatcher.engine.test_alarm_path import engine_of
from tests.support.events import event_row


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statements executed meanwhile (their first words: enough to tell them apart)."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()[:4]))

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


CALLS_PER_FLEET = 8  # two fleets (two stations): 16 calls, one timer batch (limit 50)

# Statements (cursor executions) of one timer pass over the 16 calls, at most: the pass's
# fixed work (failed timers due, claim, take, lock the calls, the batch's paging reads —
# pages, people, their assignments, the messages' homes and events —, the fired timers'
# UPDATE with the next timers' INSERT, the notifications' INSERT, the chain head and the
# audit rows) plus, for a page round, the one flush per paging step that stores its new
# page (its id goes in the audit row and the message) and the page it timed out. Measured
# on both backends: 31 and 47 for the page rounds, 10 for a reminder pass. Before the
# batch path (a status UPDATE per timer, the paging reads per step) the same passes took
# 167, 183 and 40.
MAX_FIXED = 15
MAX_PER_PAGE_STEP = 2


async def _storm(
    maker: async_sessionmaker[AsyncSession], d: Dispatcher, *, prefixes: tuple[str, ...] = ("ta", "tb")
) -> list[int]:
    """CALLS_PER_FLEET SOS alarms at each of the fleets' homes, opened by ``d`` at T0
    under the project's policies (emergency: remind every 20 s, page the station one by
    one every 30 s), with pages also sent as messages; the calls' ids."""
    d.ctx = replace(
        d.ctx,
        policies=load_context(load_settings(database_url="sqlite:///unused.db")).policies,
        page_notifications=True,
    )
    rows = []
    for prefix in prefixes:
        fleet = await provision_fleet(maker, CALLS_PER_FLEET, prefix=prefix, now=T0)
        rows += [event_row(dev, home, T0) for home, dev in zip(fleet.homes, fleet.devices, strict=True)]
    async with maker() as s, s.begin():
        await insert_events(s, rows)
    while await d.intake_once():
        pass
    async with maker() as s:
        return list(await s.scalars(select(Call.id).order_by(Call.id)))


def _copy(
    d: Dispatcher, clock: ManualClock, notifier: LogNotifier, maker: async_sessionmaker[AsyncSession]
) -> Dispatcher:
    return Dispatcher(
        settings=d.settings.model_copy(update={"instance": "b"}),
        maker=maker,
        bus=MemoryBus(),
        clock=clock,
        mqtt=None,
        notifier=notifier,
        ctx=d.ctx,
    )


async def test_a_timer_pass_takes_a_fixed_number_of_statements_plus_one_flush_per_page(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    db_backend: str,
) -> None:
    d, clock, _ = setup
    calls = await _storm(maker, d)
    passes: dict[str, list[str]] = {}
    for at, name in ((0, "page round 0"), (20, "reminder 0"), (30, "page round 1"), (40, "reminder 1")):
        clock.advance(at - (clock.now() - T0).total_seconds())
        with statements(engine_of(maker)) as seen:
            fired = await d.timers_once()
        assert fired == len(calls), (name, fired)
        passes[name] = seen
    print(
        f"\n{db_backend}, {len(calls)} timers a pass: "
        + "; ".join(f"{k} {len(v)}" for k, v in passes.items())
    )
    for name, seen in passes.items():
        # PostgreSQL: the batch's new pages take their ids from one draw and go in with one
        # INSERT, the timed-out ones with the batch's flush: no statement per page step
        # (measured 17 and 19 for the page rounds; 31 and 47 with a flush per step)
        per_timer = MAX_PER_PAGE_STEP if name.startswith("page") and db_backend == "sqlite" else 0
        assert len(seen) <= MAX_FIXED + 5 * (db_backend == "postgresql") + per_timer * len(calls), (
            name,
            Counter(seen),
        )
    async with maker() as s:
        statuses = Counter((await s.scalars(select(Timer.status))).all())
    assert statuses["firing"] == 0, statuses


async def test_a_batch_pages_each_call_as_one_step_at_a_time_did(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: async_sessionmaker[AsyncSession]
) -> None:
    """One by one, 30 s each, through the community's responders (roster order), every
    call on its own: the batch's shared reads of the station's people and the calls'
    pages give each call what its own reads gave it; each page has one audit row and one
    message naming the call's home, resident and events. (Until 55 s: at 60 s the call
    goes to the street centre, whose round is its own.)"""
    d, clock, _ = setup
    calls = await _storm(maker, d)
    for _ in range(0, 60, 5):
        while await d.timers_once():
            pass
        clock.advance(5)
    async with maker() as s:
        pages = (await s.scalars(select(Page).order_by(Page.call_id, Page.paged_at, Page.id))).all()
        audit = (await s.execute(select(AuditRow.kind, AuditRow.detail, AuditRow.call_id))).all()
        notes = (await s.scalars(select(Notification).where(Notification.purpose == "page"))).all()
        rows = (await s.execute(select(Call.id, Home.address).join(Home, Home.id == Call.home_id))).all()
        homes = {cid: address for cid, address in rows}
    by_call: dict[int, list[tuple[str, str, float]]] = {c: [] for c in calls}
    for p in pages:
        by_call[p.call_id].append(
            (p.staff_id.rsplit("-", 1)[1], p.outcome, (p.paged_at - T0).total_seconds())
        )
    expected = [("r0", "timed_out", 0.0), ("r1", "pending", 30.0)]
    assert all(v == expected for v in by_call.values()), by_call
    paged = Counter(detail["page_id"] for kind, detail, _ in audit if kind == "paged")
    timed_out = Counter(detail["page_id"] for kind, detail, _ in audit if kind == "page_timed_out")
    assert paged == Counter({p.id: 1 for p in pages}), "one 'paged' row per page"
    assert timed_out == Counter({p.id: 1 for p in pages if p.outcome == "timed_out"}), "one row a time-out"
    assert Counter(n.body["page_id"] for n in notes) == Counter({p.id: 1 for p in pages}), (
        "one message a page"
    )
    for n in notes:
        assert n.body["address"] == homes[n.call_id] and n.body["event_types"] == ["sos"], n.body
        assert n.body["resident"] and n.call_id == n.body["call_id"]
    assert (await verify_log(maker)).ok


async def test_two_copies_fire_a_storms_timers_exactly_once_with_every_audit_row(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    db_backend: str,
) -> None:
    """Two copies take the storm's timers in small batches side by side (on PostgreSQL at
    the same time, SKIP LOCKED; SQLite serialises writers, so there they take turns): each
    (call, step, repeat) fires once, is stored as fired by the copy whose audit rows say
    so, and nothing is left half-taken."""
    d, clock, notifier = setup
    calls = await _storm(maker, d)
    d2 = _copy(d, clock, notifier, maker)
    both = (d, d2)
    for _ in range(0, 130, 10):
        while True:
            if db_backend == "postgresql":
                done = await asyncio.gather(*(c.timers_once(limit=7) for c in both))
            else:
                done = [await c.timers_once(limit=7) for c in both]
            if not any(done):
                break
        clock.advance(10)
    async with maker() as s:
        fired = (
            await s.execute(
                select(
                    Timer.call_id, Timer.step, Timer.repeat, Timer.action, Timer.fired_by, Timer.status
                ).where(Timer.fired_at.is_not(None))
            )
        ).all()
        audit = (
            await s.execute(select(AuditRow.kind, AuditRow.detail, AuditRow.call_id, AuditRow.actor))
        ).all()
        pages = list((await s.scalars(select(Page.id))).all())
    keys = Counter((f.call_id, f.step, f.repeat) for f in fired)
    assert max(keys.values()) == 1, "a timer fired twice"
    assert {f.status for f in fired} == {"fired"}, Counter(f.status for f in fired)
    # by the end (120 s): reminders 0..5 (20 s … 120 s), page rounds 0..4 (0 … 120 s; from
    # 60 s at the street centre the call went to) and the street centre once, every call
    reminders = {(f.call_id, f.repeat): f.fired_by for f in fired if f.action == "remind"}
    assert len(reminders) == 6 * len(calls), len(reminders)
    rem_rows = Counter((c, detail["repeat"], actor) for kind, detail, c, actor in audit if kind == "reminder")
    assert rem_rows == Counter({(c, r, by): 1 for (c, r), by in reminders.items()}), (
        "one reminder row a firing"
    )
    rounds = [f for f in fired if f.action == "page_station" and f.step == 6]
    assert len(rounds) == 5 * len(calls), len(rounds)
    escalated = Counter(
        c for kind, detail, c, _ in audit if kind == "escalated" and detail.get("to") == "street"
    )
    assert escalated == Counter({c: 1 for c in calls}), "the street centre once per call"
    paged = Counter(detail["page_id"] for kind, detail, *_ in audit if kind == "paged")
    assert paged == Counter({p: 1 for p in pages}), "one 'paged' row per page"
    timed_out = Counter(detail["page_id"] for kind, detail, *_ in audit if kind == "page_timed_out")
    assert set(timed_out) <= set(pages) and set(timed_out.values()) <= {1}, timed_out
    assert Counter(kind for kind, *_ in audit)["timer_stale"] == 0
    if db_backend == "postgresql":
        assert len({f.fired_by for f in fired if f.action == "remind"}) == 2, "both copies shared the work"
    assert (await verify_log(maker)).ok


async def test_stale_timers_of_a_batch_are_retired_once_each_with_their_reason(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: async_sessionmaker[AsyncSession]
) -> None:
    """Half the calls were acknowledged behind the timers' back (their pending steps not
    cancelled): in one batch those calls' timers are retired as stale, one audit row each
    with its reason, while the others' fire."""
    d, clock, _ = setup
    calls = await _storm(maker, d)
    while await d.timers_once():  # the first page round, at T0
        pass
    acked = calls[::2]
    async with maker() as s, s.begin():
        await s.execute(update(Call).where(Call.id.in_(acked)).values(status="acknowledged"))
    clock.advance(20)
    assert await d.timers_once() == len(calls)
    async with maker() as s:
        timers = (await s.execute(select(Timer.id, Timer.call_id, Timer.status).where(Timer.step == 1))).all()
        stale_rows = (
            await s.execute(select(AuditRow.call_id, AuditRow.detail).where(AuditRow.kind == "timer_stale"))
        ).all()
        reminded = Counter(
            (await s.scalars(select(AuditRow.call_id).where(AuditRow.kind == "reminder"))).all()
        )
    first = {t.call_id: t.status for t in timers if t.status != "pending"}
    assert first == {c: "stale" if c in acked else "fired" for c in calls}, first
    assert sorted(c for c, _ in stale_rows) == sorted(acked), "one stale row per retired timer"
    assert {detail["reason"] for _, detail in stale_rows} == {"ALREADY_ACKNOWLEDGED"}
    assert reminded == Counter({c: 1 for c in calls if c not in acked})
    # the fired reminders' next repetitions are stored; the stale ones' are not
    pending = Counter(t.call_id for t in timers if t.status == "pending")
    assert pending == Counter({c: 1 for c in calls if c not in acked})
    assert (await verify_log(maker)).ok


async def test_a_batch_gives_other_tasks_a_turn_between_timers(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch's steps are Python once its reads are made (no statement between them on
    PostgreSQL): without a yield between timers the intake's next commit, in the same
    event loop, would wait for the whole batch. Another task runs between every two
    timers."""
    d, clock, _ = setup
    calls = await _storm(maker, d)
    clock.advance(20)  # the page rounds and reminders due
    turns = 0
    seen_at: list[int] = []  # the other task's turns when each timer began
    real_fire = timers.fire_timer

    async def fire_timer(*args: Any, **kwargs: Any) -> Any:
        seen_at.append(turns)
        return await real_fire(*args, **kwargs)

    monkeypatch.setattr(timers, "fire_timer", fire_timer)
    done = asyncio.Event()

    async def other() -> None:
        nonlocal turns
        while not done.is_set():
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    fired = await d.timers_once()
    done.set()
    await task
    assert fired == len(calls) * 2 == len(seen_at)
    waits = [b - a for a, b in pairwise(seen_at)]
    assert all(w > 0 for w in waits), f"timers fired back to back without a turn for others: {waits}"


async def test_passes_grow_while_they_are_full_on_postgresql(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    db_backend: str,
) -> None:
    """A backlog of due timers (a storm's reminders and page rounds) is fired in passes
    twice as big each time one is full; a pass that is not full resets the size. SQLite
    keeps the small pass."""
    d, clock, _ = setup
    calls = await _storm(maker, d, prefixes=tuple(f"g{i}" for i in range(10)))
    clock.advance(20)  # each call's page round and reminder: 160 timers due
    passes = []
    while n := await d.timers_once():
        passes.append(n)
    assert sum(passes) == 2 * len(calls) == 160
    assert passes == ([50, 100, 10] if db_backend == "postgresql" else [50, 50, 50, 10]), passes
    assert d._timer_batch == 50


async def _loop_passes(d: Dispatcher, until_fired: int) -> list[tuple[int, int]]:
    """Run the timer loop until ``until_fired`` timers fired (the clock stands still),
    then a moment more; (size, fired) of each of its passes."""
    passes: list[tuple[int, int]] = []
    real_pass = d.timers_once

    async def counted(limit: int | None = None) -> int:
        size = d._timer_batch if limit is None else limit
        n = await real_pass(limit)
        passes.append((size, n))
        return n

    d.timers_once = counted  # type: ignore[method-assign]
    d._wake_timers.clear()  # an intake round's wake-up is not what this watches
    loop = asyncio.create_task(d._timer_loop())
    try:
        async with asyncio.timeout(10):
            while sum(n for _, n in passes) < until_fired:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the cap on its sleep is timer_poll_s (0.25 s)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    return passes


async def test_a_pass_that_was_not_full_is_not_followed_by_an_empty_one(
    setup: tuple[Dispatcher, ManualClock, LogNotifier], maker: async_sessionmaker[AsyncSession]
) -> None:
    """A pass that took fewer timers than it could left nothing due at its start; the loop
    then asks when the next is due and sleeps, where it ran another pass that claimed
    nothing (a transaction of BEGIN, the claim and COMMIT after every pass of a steady
    stream). A full pass is followed at once by the next."""
    d, clock, _ = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    assert await d.intake_once() == 1
    clock.advance(2)  # the first reminder is due
    passes = await _loop_passes(d, until_fired=1)
    assert [n for _, n in passes] == [1], "one pass, then a sleep until the next is due"

    clock.advance(4)  # two more reminders and the street's escalation are due
    d._timer_batch = 1
    passes = await _loop_passes(d, until_fired=3)
    assert passes[0] == (1, 1) and sum(n for _, n in passes) == 3, passes
    # a full pass is followed at once by the next (the size back to its base on SQLite,
    # doubled on PostgreSQL); only a pass after a full one may find nothing
    assert all(n >= size for (size, n), _ in pairwise(passes)), passes

"""The alarm lane (issue 15): a new call's opening step (alert the station) fires in the
transaction that opens the call, the console is told right after that commit, and the
per-call write path stays a small, fixed number of statements."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.shell.fleet_registry import provision_fleet
from config.settings import load_settings
from device_gateway.store import insert_events
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import Call, Timer
from dispatcher.engine.process import Dispatcher, load_context
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from tests.dispatcher.engine.support import T0, ManualClock, store_event
from tests.support.events import event_row

# Statements (cursor executions; the commit is not one) to open one call end to end under
# the short policy: its intake transaction, then a timer pass at the same instant. At the
# branch point of issue 15: SQLite 23 + 9 = 32, PostgreSQL 17 + 9 = 26 (the alert was the
# timer pass's, a transaction of its own; SQLite inserted the call's timers one by one).
# With the opening step in the intake and Core inserts: SQLite 16 + 2 = 18, PostgreSQL
# 17 + 2 = 19 (docs/performance.md). PostgreSQL's claim then gained one per intake round,
# not per call: SET LOCAL plan_cache_mode (tests/integration/test_intake_claim_plan_pg.py);
# the batch reads lost three (homes with residents and their lock, stations with their
# free responders: one statement each): SQLite 14 + 2 = 16, PostgreSQL 15 + 2 = 17. On
# PostgreSQL the buffered rows (call event, intake decision, timers, notifications) then
# went in as one statement and the audit rows with the chain head as another
# (carecall/core/row_batch.py): 11 + 2 = 13. With every connection planning each statement
# for its parameters (carecall/core/db.py CUSTOM_PLANS) the claim's SET LOCAL went: 10 + 2
# = 12. A change that makes the path longer fails here.
MAX_STATEMENTS = {"sqlite": 16, "postgresql": 12}


@contextmanager
def counting(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


def engine_of(maker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    bind = maker.kw["bind"]
    assert isinstance(bind, AsyncEngine)
    return bind


async def test_the_opening_alert_fires_with_the_call_and_no_timer_pass_is_needed(setup, maker) -> None:  # type: ignore[no-untyped-def]
    d, _clock, _notifier = setup
    told: list[dict[str, Any]] = []

    async def consoles(ids: set[int]) -> None:
        async with maker() as s:  # the call is committed when the consoles are told
            alerted = await s.scalar(select(AuditRow.id).where(AuditRow.kind == "alerted"))
        told.append({"ids": ids, "alerted": alerted})

    d.on_calls_changed = consoles
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    assert await d.intake_once() == 1
    assert told and told[0]["alerted"] is not None, "told after the commit that holds the alert"
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
        rows = (await s.execute(select(AuditRow.kind, AuditRow.detail).order_by(AuditRow.seq))).all()
        timers = (await s.scalars(select(Timer).order_by(Timer.step, Timer.repeat))).all()
        station = (await s.scalars(select(Notification).where(Notification.purpose == "alert_station"))).all()
    assert [k for k, _ in rows] == ["event_received", "call_opened", "assigned", "alerted"]
    assert rows[-1][1]["step"] == 0 and rows[-1][1]["late_ms"] == 0
    assert [(n.target, n.body["call_id"]) for n in station] == [("station:cm1", call.id)]
    step0 = [t for t in timers if t.step == 0]
    assert [(t.status, t.fired_by, t.fired_at) for t in step0] == [("fired", d.name, T0)]
    assert all(t.status == "pending" and t.due_at > T0 for t in timers if t.step != 0)
    # nothing is due: the timer loop has no pass to make for the opening step
    assert await d.timers_once() == 0
    async with maker() as s:
        alerts = await s.scalar(select(AuditRow.id).where(AuditRow.kind == "alerted", AuditRow.seq > 4))
    assert alerts is None, "the station was alerted once"
    assert (await verify_log(maker)).ok


async def test_a_later_cancel_in_the_same_batch_cancels_the_new_calls_timers(setup, maker) -> None:  # type: ignore[no-untyped-def]
    """The timers go in as one INSERT at the end of the batch, yet a cancel later in the
    same batch still finds (and cancels) them."""
    d, _clock, _notifier = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await store_event(
        maker, "h1-btn", "e2", "cancel", T0 + timedelta(seconds=1), cls="cancel", data={"ref": "e1"}
    )
    assert await d.intake_once() == 2
    async with maker() as s:
        call = (await s.scalars(select(Call))).one()
        statuses = sorted({t.status for t in (await s.scalars(select(Timer))).all()})
    assert call.status == "cancelled"
    assert statuses == ["cancelled", "fired"], "the opening step fired; every later one cancelled"
    assert (await verify_log(maker)).ok


async def test_opening_one_call_takes_few_statements(setup, maker, db_backend: str) -> None:  # type: ignore[no-untyped-def]
    d, _clock, _notifier = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    with counting(engine_of(maker)) as intake:
        assert await d.intake_once() == 1
    with counting(engine_of(maker)) as timers:
        await d.timers_once()
    total = len(intake) + len(timers)
    print(
        f"\nopening one call ({db_backend}): intake {len(intake)} {intake}; timer pass {len(timers)} {timers}"
    )
    assert total <= MAX_STATEMENTS[db_backend], (intake, timers)


async def test_the_projects_policies_fire_the_opening_alert_in_the_intake(setup, maker) -> None:  # type: ignore[no-untyped-def]
    """config/escalation.yaml: an emergency's step 0 (alert the station) fires in the
    intake's transaction, once; its first page_station round, also due at once, is the
    timer loop's (paging would hold back the intake's commit), fired in its next pass."""
    d, _clock, _notifier = setup
    policies = load_context(load_settings(database_url="sqlite:///unused.db")).policies
    d.ctx = replace(d.ctx, policies=policies)
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    assert await d.intake_once() == 1
    async with maker() as s:
        kinds = list(await s.scalars(select(AuditRow.kind).order_by(AuditRow.seq)))
        timers = (await s.scalars(select(Timer).order_by(Timer.step, Timer.repeat))).all()
    assert kinds == ["event_received", "call_opened", "assigned", "alerted"]
    assert [(t.step, t.action) for t in timers if t.status == "fired"] == [(0, "alert_station")]
    due_now = [(t.step, t.action) for t in timers if t.status == "pending" and t.due_at == T0]
    assert due_now == [(6, "page_station")]
    assert await d.timers_once() == 1, "only the page round is left to the timer loop"
    async with maker() as s:
        kinds = list(await s.scalars(select(AuditRow.kind).order_by(AuditRow.seq)))
    assert kinds.count("alerted") == 1 and kinds.count("paged") == 1, kinds
    assert (await verify_log(maker)).ok


async def test_two_copies_opening_calls_at_once_alert_each_call_once_and_keep_the_chain(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
    db_backend: str,
) -> None:
    """Two dispatcher copies take a storm side by side: each alarm opens one call, its
    station is alerted exactly once (by whichever copy opened it), nothing of the opening
    is left to a timer pass, and the audit chain verifies."""
    d, clock, notifier = setup
    d2 = Dispatcher(
        settings=d.settings.model_copy(update={"instance": "b"}),
        maker=maker,
        bus=MemoryBus(),
        clock=clock,
        mqtt=None,
        notifier=notifier,
        ctx=d.ctx,
    )
    assert d2.name != d.name
    fleet = await provision_fleet(maker, 40, prefix="mc", now=T0)
    async with maker() as s, s.begin():
        await insert_events(
            s,
            [event_row(dev, home, T0) for home, dev in zip(fleet.homes, fleet.devices, strict=True)],
        )

    async def drain(copy: Dispatcher) -> None:
        for _ in range(200):
            try:
                if not await copy.intake_once(limit=5):
                    return
            except OperationalError:  # SQLite: the other copy holds the write lock; again
                await asyncio.sleep(0.01)
        raise AssertionError("the copies never finished the storm")

    await asyncio.gather(drain(d), drain(d2))
    while await d.intake_once():
        pass
    assert await d.timers_once() == 0 and await d2.timers_once() == 0
    async with maker() as s:
        calls = (await s.scalars(select(Call))).all()
        alerted = Counter((await s.scalars(select(AuditRow.call_id).where(AuditRow.kind == "alerted"))).all())
        station_alerts = Counter(
            (
                await s.scalars(select(Notification.call_id).where(Notification.purpose == "alert_station"))
            ).all()
        )
        fired = (
            await s.execute(
                select(Timer.call_id, Timer.fired_by).where(Timer.step == 0, Timer.status == "fired")
            )
        ).all()
    assert len(calls) == 40
    assert set(alerted.values()) == {1} and len(alerted) == 40, "each call alerted once"
    assert set(station_alerts.values()) == {1} and len(station_alerts) == 40
    assert sorted(c for c, _ in fired) == sorted(c.id for c in calls)
    print(f"\n{db_backend}: opening alerts by copy {dict(Counter(by for _, by in fired))}")
    assert (await verify_log(maker)).ok


async def test_an_intake_round_wakes_the_timer_loop_only_for_a_timer_due_before_its_wake(
    setup, maker
) -> None:  # type: ignore[no-untyped-def]
    """Every step due when a call opens fires with it, so the timer loop need not make a
    pass after each intake round (it did: a claim and a look for the next due time, ten
    rounds a second at 100 alarms/s). It is woken when a new call's first stored timer is
    due before the moment it sleeps until, or when it has nothing to wait for."""
    d, _clock, _notifier = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    d._timers_sleep_until = T0 + timedelta(hours=1)  # it would sleep past the new timers
    assert await d.intake_once() == 1
    async with maker() as s:
        first = min((await s.scalars(select(Timer.due_at).where(Timer.status == "pending"))).all())
    assert d._wake_timers.is_set(), "woken: its sleep would have missed the new call's first timer"
    d._wake_timers.clear()

    await store_event(maker, "h1-hub", "e2", "fall", T0)  # joins the open call: no new timers
    d._timers_sleep_until = None
    assert await d.intake_once() == 1
    assert not d._wake_timers.is_set(), "nothing stored: nothing to wake for"

    d._timers_sleep_until = first - timedelta(seconds=1)  # it wakes before the first due anyway
    d._wake_timers_for(first.replace(tzinfo=T0.tzinfo) if first.tzinfo is None else first)
    assert not d._wake_timers.is_set()
    d._timers_sleep_until = None  # a pass running, or no timer to wait for
    d._wake_timers_for(T0 + timedelta(seconds=20))
    assert d._wake_timers.is_set()


async def test_an_intake_copy_hints_the_timer_copy_with_the_first_due_time(setup, maker) -> None:  # type: ignore[no-untyped-def]
    """Split loops: the intake copy publishes when the stored timers are first due; the
    timer copy wakes only if it would sleep past that (an unreadable hint wakes it)."""
    d, clock, notifier = setup
    bus = MemoryBus()

    def copy(**settings: str) -> Dispatcher:
        return Dispatcher(
            settings=d.settings.model_copy(update=settings),
            maker=maker,
            bus=bus,
            clock=clock,
            mqtt=None,
            notifier=notifier,
            ctx=d.ctx,
        )

    intake = copy(dispatcher_loops="intake")
    timers_copy = copy(instance="t", dispatcher_loops="timers")
    hints: list[dict[str, Any]] = []

    async def listen() -> None:
        async for msg in bus.subscribe("timers"):
            hints.append(msg)

    listener = asyncio.create_task(listen())
    hinted = asyncio.create_task(timers_copy._listen_timers())
    await asyncio.sleep(0.05)
    try:
        timers_copy._timers_sleep_until = T0 + timedelta(hours=1)
        await store_event(maker, "h1-btn", "e1", "sos", T0)
        assert await intake.intake_once() == 1
        await asyncio.sleep(0.05)
        assert [set(h) for h in hints] == [{"due"}]
        assert timers_copy._wake_timers.is_set()
        timers_copy._wake_timers.clear()
        timers_copy._timers_sleep_until = T0  # wakes before any new timer is due
        await bus.publish("timers", {"due": (T0 + timedelta(seconds=20)).isoformat()})
        await asyncio.sleep(0.05)
        assert not timers_copy._wake_timers.is_set()
        await bus.publish("timers", {"calls": 3})  # an older copy's hint: no time in it
        await asyncio.sleep(0.05)
        assert timers_copy._wake_timers.is_set()
    finally:
        listener.cancel()
        hinted.cancel()
        await asyncio.gather(listener, hinted, return_exceptions=True)

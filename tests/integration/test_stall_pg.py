"""The stall alarm on PostgreSQL: the monitor's queries measure each kind of waiting work
and can use their indexes, and monitors racing on one database open, announce and close
an episode exactly once (the conditional UPDATEs under real row locks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.calls.models import Timer
from dispatcher.health import queries as h
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from tests.dispatcher.engine.support import store_event
from tests.dispatcher.health.support import T0, World, admin_messages, audit_kinds, drain, make_world

pytestmark = pytest.mark.integration


@pytest.fixture
async def pg_world(pg_maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[World]:
    async with make_world(pg_maker) as w:
        yield w


async def test_each_kind_of_waiting_work_is_measured_on_postgresql(pg_world: World) -> None:
    w = pg_world
    async with w.maker() as s:
        empty = await h.read_oldest(s)
    assert (empty.event_received_at, empty.timer_due_at, empty.ack_queued_at, empty.notification_due_at) == (
        None,
        None,
        None,
        None,
    )
    await store_event(w.maker, "h1-btn", "sos-1", "sos", T0)
    async with w.maker() as s:
        got = await h.read_oldest(s)
    assert got.event_received_at == T0 and got.timer_due_at is None

    # a call, with the station's alert queued in the same transaction (its opening step),
    # the device's ack queued and the later steps as timers
    await drain(w.dispatcher, timers=False, outbox=False)
    w.time.advance(1)
    await drain(w.dispatcher, intake=False, outbox=False)  # the page round (a timer due at once)
    async with w.maker() as s:
        got = await h.read_oldest(s, event_floor=got.event_floor)
        first_due = await s.scalar(
            select(Timer.due_at).where(Timer.status == "pending").order_by(Timer.due_at).limit(1)
        )
        ack_at = await s.scalar(
            select(Notification.created_at).where(Notification.channel == "mqtt").limit(1)
        )
        note_at = await s.scalar(
            select(Notification.next_attempt_at)
            .where(Notification.channel != "mqtt")
            .order_by(Notification.id)
        )
    assert got.event_received_at is None  # taken
    assert got.ack_queued_at == ack_at == T0
    assert got.notification_due_at == note_at == T0  # the alert went in with the call
    assert first_due is not None and got.timer_due_at == first_due

    w.time.advance(40)  # nothing runs any more
    mon = w.monitor("serve-pg")
    await mon.check_once()
    assert set(await w.stalled_parts()) == {"timers", "acks", "notifications"}


async def test_racing_monitors_open_announce_and_close_one_episode(pg_world: World) -> None:
    w = pg_world
    w.dispatcher.mqtt = None  # acks dropped: only intake stalls
    notifiers = [LogNotifier() for _ in range(4)]
    monitors = [w.monitor(f"copy-{i}", n) for i, n in enumerate(notifiers)]
    await store_event(w.maker, "h1-btn", "sos-1", "sos", T0)
    for _ in range(10):
        w.time.advance(2)
        await asyncio.gather(*(m.check_once() for m in monitors))
    assert [k for k, _ in await audit_kinds(w.maker)] == ["dispatch_stalled"]
    assert len(admin_messages(*notifiers, purpose="dispatch_stalled")) == 2  # two admins, once each
    assert await w.stalled_parts() == ["intake"]

    for _ in range(6):
        await drain(w.dispatcher)
        w.time.advance(2)
        await asyncio.gather(*(m.check_once() for m in monitors))
    assert [k for k, _ in await audit_kinds(w.maker)] == ["dispatch_stalled", "dispatch_recovered"]
    assert len(admin_messages(*notifiers, purpose="dispatch_recovered")) == 2
    assert await w.stalled_parts() == []


async def explain(maker: async_sessionmaker[AsyncSession], stmt: object) -> str:
    sql = str(stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]
    async with maker() as s, s.begin():
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        rows = await s.execute(text(f"EXPLAIN {sql}"))
        return "\n".join(r[0] for r in rows)


async def test_the_queries_can_use_their_indexes(pg_world: World) -> None:
    """Tables here are tiny, so the planner would scan them; with sequential scans off it
    shows which index each query can use (a query no index serves would still scan)."""
    plan = await explain(pg_world.maker, h.pending_notifications_query())
    assert "ix_notifications_pending" in plan, plan
    plan = await explain(pg_world.maker, h.pending_timer_query())
    assert "ix_timers_pending_due" in plan, plan
    plan = await explain(pg_world.maker, h.waiting_events_query(1000))
    assert "pk_device_events" in plan and "pk_event_intake" in plan, plan
    assert "Seq Scan" not in plan, plan

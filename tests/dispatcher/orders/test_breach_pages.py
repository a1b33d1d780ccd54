"""A missed service level pages through the durable outbox: the page rows are written in
the transaction that records the breach, retried after a failing channel until one
gets through, the second step (the station holding the order) fires only after its
delay and only for an order still not back within the level, several dispatcher copies
page once, and nothing of it is a call: no call, no timer, no county ladder, and a call
notification waiting at the same time goes first."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from config.settings import load_settings
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import Call, Timer
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications import service_pages
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.orders import breaches
from dispatcher.orders.catalogue import BreachPages
from dispatcher.orders.catalogue_file import load_catalogue
from dispatcher.orders.lifecycle import OrderAction
from dispatcher.orders.models import Order
from dispatcher.orders.schemas import BookingIn
from dispatcher.orders.service import act, create_order
from dispatcher.registry.models import Staff
from tests.conftest import add_small_registry
from tests.support.clock import ManualClock
from tests.support.events import store_event
from tests.support.registry import staff_row
from tests.support.services import FailingFirst, provider_row

T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
MEAL_ACCEPT_S = 900  # config/services.yaml: meal, accept_within_s
CHAT_ACCEPT_S = 1800  # chat (a station's own), accept_within_s
AFTER = BreachPages(station_after_s=600)
Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
async def world(maker: Maker) -> AsyncIterator[tuple[Dispatcher, ManualClock]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        s.add_all(
            [
                staff_row("cm1-r1"),  # on duty at cm1
                Staff(id="cm1-m1", station_id="cm1", name="王站长", role="manager", phone="13800000011"),
                provider_row(created_at=T0),
            ]
        )
    clock = ManualClock(T0)
    settings = load_settings(database_url="sqlite:///unused.db")
    d = Dispatcher(
        settings=settings, maker=maker, bus=MemoryBus(), clock=clock, mqtt=None, notifier=LogNotifier()
    )
    yield d, clock


async def book(maker: Maker, kind: str) -> int:
    async with maker() as s, s.begin():
        order, _ = await create_order(
            s,
            catalogue=load_catalogue(),
            booking=BookingIn(resident_id="r1", kind=kind),
            source="operator",
            actor="op-cm1",
            scope=None,
            client_ref=None,
            now=T0,
        )
        return order.id


async def accept(maker: Maker, order_id: int, at: datetime) -> None:
    async with maker() as s, s.begin():
        await act(s, order_id=order_id, action=OrderAction.accept, body={}, actor="p", scope=None, now=at)


async def pages(maker: Maker) -> list[Notification]:
    async with maker() as s:
        return list((await s.scalars(select(Notification).order_by(Notification.id))).all())


async def breached_rows(maker: Maker) -> list[AuditRow]:
    async with maker() as s:
        q = select(AuditRow).where(AuditRow.kind == "order_breached").order_by(AuditRow.seq)
        return list((await s.scalars(q)).all())


async def count(maker: Maker, model: type[Any]) -> int:
    async with maker() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_the_page_rows_are_written_with_the_breach_or_not_at_all(
    world: tuple[Dispatcher, ManualClock], maker: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    oid = await book(maker, "meal")
    real = service_pages.queue_service_page

    def crash(*_: Any, **__: Any) -> list[Notification]:
        raise RuntimeError("the process died while queueing the page")

    monkeypatch.setattr(breaches, "queue_service_page", crash)
    with pytest.raises(RuntimeError):
        await breaches.check_once(maker, now=at(MEAL_ACCEPT_S + 1), channel="log", settings=AFTER)
    assert await breached_rows(maker) == [] and await pages(maker) == []
    async with maker() as s:
        order = await s.get(Order, oid)
    assert order is not None and order.breached == [], "the breach went with the lost page"

    monkeypatch.setattr(breaches, "queue_service_page", real)
    [page] = await breaches.check_once(maker, now=at(MEAL_ACCEPT_S + 2), channel="log", settings=AFTER)
    assert (page.order_id, page.step, page.targets) == (oid, "manager", ("phone:13900000001",))
    [row] = await breached_rows(maker)
    [note] = await pages(maker)
    assert (note.order_id, note.visit_id, note.call_id, note.status) == (oid, None, None, "pending")
    assert note.body["level"] == "accept" and note.body["step"] == "manager"
    assert row.detail["step"] == "manager" and row.detail["to"] == ["phone:139****0001"]


async def test_a_failing_channel_is_retried_until_the_page_gets_through(
    world: tuple[Dispatcher, ManualClock], maker: Maker
) -> None:
    d, clock = world
    oid = await book(maker, "meal")
    flaky = FailingFirst(failures=2)
    d.notifier = flaky
    clock.advance(MEAL_ACCEPT_S + 1)
    await d.order_levels_once()
    for _ in range(40):  # the outbox's backoff: 2 s, then 4 s
        while await d.outbox_once():
            pass
        clock.advance(1)
    [note] = await pages(maker)
    assert (note.status, note.attempts) == ("sent", 3)
    assert [(m.purpose, m.call_id, m.body["order_id"]) for m in flaky.sent] == [("order_breach", None, oid)]
    async with maker() as s:
        rows = (
            await s.scalars(
                select(AuditRow)
                .where(AuditRow.kind.in_(["notification_failed", "notification_sent"]))
                .order_by(AuditRow.seq)
            )
        ).all()
    assert [r.kind for r in rows] == ["notification_failed", "notification_failed", "notification_sent"]
    assert all(r.call_id is None and r.detail["order_id"] == oid and r.station_id == "cm1" for r in rows)
    assert all("13900000001" not in str(r.detail) for r in rows), "the audit names the target masked"
    assert (await verify_log(maker)).ok


async def test_the_station_is_paged_after_the_delay_unless_the_order_was_accepted_meanwhile(
    world: tuple[Dispatcher, ManualClock], maker: Maker
) -> None:
    late = await book(maker, "meal")
    taken = await book(maker, "meal")
    own = await book(maker, "chat")  # the station's own order
    await breaches.check_once(maker, now=at(CHAT_ACCEPT_S), channel="log", settings=AFTER)
    assert [(n.order_id, n.target) for n in await pages(maker)] == [
        (late, "phone:13900000001"),
        (taken, "phone:13900000001"),
        (own, "staff:cm1-m1"),  # its manager, not the on-duty responder
    ]
    await accept(maker, taken, at(CHAT_ACCEPT_S + 1))
    # meal fell due at 900 s: the station step is due at 1500 s, already past
    steps = await breaches.check_once(maker, now=at(CHAT_ACCEPT_S + 2), channel="log", settings=AFTER)
    assert [(p.order_id, p.level, p.step, p.targets) for p in steps] == [
        (late, "accept", "station", ("station:cm1", "staff:cm1-r1"))
    ]
    # the chat fell due at 1800 s: not before 2400 s
    assert await breaches.check_once(maker, now=at(2399), channel="log", settings=AFTER) == []
    steps = await breaches.check_once(maker, now=at(2400), channel="log", settings=AFTER)
    assert [(p.order_id, p.step) for p in steps] == [(own, "station")]
    # once each (meal's start level falls due at 5400 s, a level of its own)
    assert await breaches.check_once(maker, now=at(5000), channel="log", settings=AFTER) == []
    rows = await breached_rows(maker)
    assert [(r.detail["order_id"], r.detail["step"]) for r in rows] == [
        (late, "manager"),
        (taken, "manager"),
        (own, "manager"),
        (late, "station"),
        (own, "station"),
    ]
    assert not [n for n in await pages(maker) if n.order_id == taken and n.body["step"] == "station"]
    async with maker() as s:
        order = await s.get(Order, late)
    assert order is not None and order.breached == ["accept"] and order.breach_escalated == ["accept"]


async def test_dispatcher_copies_page_once(world: tuple[Dispatcher, ManualClock], maker: Maker) -> None:
    await book(maker, "meal")
    await book(maker, "chat")
    for moment in (CHAT_ACCEPT_S + 1, CHAT_ACCEPT_S + 700):
        await asyncio.gather(
            *(breaches.check_once(maker, now=at(moment), channel="log", settings=AFTER) for _ in range(3))
        )
    notes = await pages(maker)
    assert sorted((n.order_id, n.body["step"], n.target) for n in notes) == sorted(
        {(n.order_id, n.body["step"], n.target) for n in notes}
    )
    assert sorted(n.body["step"] for n in notes) == [
        "manager",
        "manager",
        "station",
        "station",
        "station",
        "station",
    ]
    assert len(await breached_rows(maker)) == 4
    assert (await verify_log(maker)).ok


async def test_no_call_no_timer_no_ladder_and_a_waiting_call_notification_goes_first(
    world: tuple[Dispatcher, ManualClock], maker: Maker
) -> None:
    d, clock = world
    notifier = d.notifier
    assert isinstance(notifier, LogNotifier)
    await book(maker, "meal")
    await book(maker, "chat")
    clock.advance(load_catalogue().breach_pages.station_after_s + CHAT_ACCEPT_S + 1)
    await d.order_levels_once()
    await d.order_levels_once()  # the second steps
    assert await count(maker, Call) == 0 and await count(maker, Timer) == 0
    notes = await pages(maker)
    assert sorted(n.body["step"] for n in notes) == ["manager"] * 2 + ["station"] * 4
    assert all(n.call_id is None and n.purpose == "order_breach" for n in notes)
    assert not [n for n in notes if n.target in ("station:st1", "station:county") or "cty" in n.target]

    # an emergency now: its notifications are newer rows, and still delivered first
    await store_event(maker, "h1-btn", "sos-1", "sos", clock.now())
    while await d.intake_once():
        pass
    while await d.timers_once():
        pass
    async with maker() as s:
        call_ids = set(
            (await s.scalars(select(Notification.id).where(Notification.call_id.is_not(None)))).all()
        )
    assert call_ids and min(call_ids) > max(n.id for n in notes)
    while await d.outbox_once(limit=1):
        pass
    delivered = [m.call_id is not None for m in notifier.sent]
    assert delivered == sorted(delivered, reverse=True), "every call notification before any order page"
    assert delivered.count(False) == len(notes)


@pytest.mark.sqlite_only
async def test_on_sqlite_a_round_with_nothing_due_leaves_the_writers_alone(
    world: tuple[Dispatcher, ManualClock], maker: Maker, sqlite_url: str
) -> None:
    """SQLite's write lock is the whole database's: a round that finds nothing due does
    not take it (the demo history runs the watch every real second beside the simulated
    staff's writes), a round with a step due still records it."""
    oid = await book(maker, "meal")
    writer = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # somebody else is writing
        started = time.monotonic()
        assert (
            await breaches.check_once(maker, now=at(MEAL_ACCEPT_S - 1), channel="log", settings=AFTER) == []
        )
        assert time.monotonic() - started < 5.0  # not a wait for the lock (30 s busy timeout)
        writer.execute("COMMIT")
    finally:
        writer.close()
    [page] = await breaches.check_once(maker, now=at(MEAL_ACCEPT_S), channel="log", settings=AFTER)
    assert (page.order_id, page.level, page.step) == (oid, "accept", "manager")
    assert len(await breached_rows(maker)) == 1

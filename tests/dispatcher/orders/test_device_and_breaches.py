"""A service button's event becomes an order, never a call, and an emergency at the same
home still opens its call; a missed service level pages the provider's manager once and
leaves the calls alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.calls.models import Call, EventIntake, Timer
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.orders import breaches
from dispatcher.orders.models import Order, Provider
from tests.conftest import add_small_registry
from tests.support.api import api_world
from tests.support.api import bearer as login
from tests.support.events import store_event
from tests.support.registry import add_logins, staff_row
from tests.support.services import provider_row

T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai

pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def world(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        s.add(staff_row("cm1-r1"))  # someone on duty: the call stays at the community
        await add_logins(s, [("op-cm1", "operator", "cm1")], now=T0)
        s.add(provider_row(created_at=T0))
    async with api_world(maker, T0) as w:
        yield {"client": w.client, "dispatcher": w.dispatcher, "clock": w.clock}


async def count(maker: async_sessionmaker[AsyncSession], model: type[Any]) -> int:
    async with maker() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def test_service_button_books_an_order_and_an_emergency_still_opens_a_call(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    d: Dispatcher = world["dispatcher"]
    c: httpx.AsyncClient = world["client"]
    await store_event(maker, "h1-btn", "svc-1", "service_request", T0, cls="service", data={"kind": "meal"})
    await d.intake_once()
    assert await count(maker, Call) == 0, "a service request never opens an emergency call"
    async with maker() as s:
        [order] = (await s.scalars(select(Order))).all()
        [intake] = (await s.scalars(select(EventIntake))).all()
    assert (order.kind, order.source, order.device_id, order.event_id) == (
        "meal",
        "device",
        "h1-btn",
        "svc-1",
    )
    assert (order.status, order.provider_id, order.resident_id) == ("assigned", "p-meals", "r1")
    assert (intake.decision, intake.call_id) == ("order", None)
    # an SOS from the same home right after: a call, first and alone in the queue
    world["clock"].advance(5)
    await store_event(maker, "h1-btn", "sos-1", "sos", T0 + timedelta(seconds=5))
    await d.intake_once()
    op = await login(c, "op-cm1")
    [call] = (await c.get("/api/v1/calls", headers=op)).json()
    assert call["events"][0]["type"] == "sos" and call["priority"] in ("P1", "P2")
    assert [o["id"] for o in (await c.get("/api/v1/orders", headers=op)).json()] == [order.id]


async def test_a_missed_level_pages_the_manager_once_and_never_the_call_ladder(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    op = await login(c, "op-cm1")
    oid = (await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "meal"}, headers=op)).json()[
        "id"
    ]
    sid = (await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=op)).json()[
        "id"
    ]
    assert await breaches.check_once(maker, now=T0 + timedelta(seconds=899), channel="log") == []
    pages = await breaches.check_once(maker, now=T0 + timedelta(seconds=1801), channel="log")
    # meal: accept within 900 s; chat (a station's own): accept within 1800 s, its on-duty
    # staff paged (cm1 has no manager)
    assert [(p.order_id, p.level, p.step, p.targets) for p in pages] == [
        (oid, "accept", "manager", ("phone:13900000001",)),
        (sid, "accept", "manager", ("staff:cm1-r1",)),
    ]
    assert await breaches.check_once(maker, now=T0 + timedelta(seconds=1802), channel="log") == []
    async with maker() as s:
        rows = (await s.scalars(select(AuditRow).where(AuditRow.kind == "order_breached"))).all()
        order = await s.get(Order, oid)
        notes = (await s.scalars(select(Notification).order_by(Notification.id))).all()
    assert sorted((r.detail["order_id"], r.detail["level"], r.detail["step"]) for r in rows) == sorted(
        [(oid, "accept", "manager"), (sid, "accept", "manager")]
    )
    assert all(r.call_id is None for r in rows)
    assert [r.detail["to"] for r in rows if r.detail["order_id"] == oid] == [["phone:139****0001"]]
    assert order is not None and order.breached == ["accept"]
    assert [(n.purpose, n.target, n.order_id, n.call_id) for n in notes] == [
        ("order_breach", "phone:13900000001", oid, None),
        ("order_breach", "staff:cm1-r1", sid, None),
    ]
    for model in (Call, Timer):
        assert await count(maker, model) == 0, model.__name__


async def test_the_dispatcher_runs_the_level_watch_and_delivers_its_pages(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    d: Dispatcher = world["dispatcher"]
    op = await login(c, "op-cm1")
    oid = (await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "meal"}, headers=op)).json()[
        "id"
    ]
    assert await d.order_levels_once() == 0
    notifier = d.notifier
    assert isinstance(notifier, LogNotifier) and notifier.sent == []
    world["clock"].advance(901)
    await d.order_levels_once()
    while await d.outbox_once():
        pass
    assert [(m.purpose, m.target, m.call_id, m.body["order_id"]) for m in notifier.sent] == [
        ("order_breach", "phone:13900000001", None, oid)
    ]


async def test_a_provider_row_with_unreadable_hours_is_passed_over_not_fatal(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    async with maker() as s, s.begin():
        s.add(
            Provider(
                id="p-bad",
                name="坏时间",
                lat=32.692,
                lon=112.852,
                radius_km=3.0,
                stations=[],
                hours="whenever",
                kinds=["meal"],
                capacity=5,
                manager_name="",
                manager_phone="",
                active=True,
                created_at=T0,
            )
        )
    c: httpx.AsyncClient = world["client"]
    op = await login(c, "op-cm1")
    r = await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "meal"}, headers=op)
    assert r.status_code == 201 and r.json()["provider_id"] == "p-meals"
    assert ["provider", "p-bad", "CLOSED"] in r.json()["route_reasons"]

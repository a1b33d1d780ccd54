"""Service orders through the HTTP API with real tokens, on SQLite and PostgreSQL: booking
(routed, idempotent), scope, roles, the phone's steps, the audit rows, providers' CRUD —
and an order never in the emergency queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.auth.models import RecordRead
from dispatcher.auth.users import create_user
from tests.conftest import add_small_registry
from tests.support.api import api_world
from tests.support.api import bearer as login
from tests.support.clock import ManualClock
from tests.support.registry import PW, add_logins, add_second_street, staff_row

T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, a Monday

pytestmark = pytest.mark.usefixtures("cheap_argon2")

MEALS = {
    "id": "p-meals",
    "name": "幸福食堂",
    "lat": 32.693,
    "lon": 112.853,
    "radius_km": 3.0,
    "hours": "07:00-19:00",
    "kinds": ["meal", "shopping"],
    "capacity": 1,
    "manager_name": "孙经理",
    "manager_phone": "13900000001",
}


@pytest.fixture
async def world(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await add_second_street(s)
        s.add_all([staff_row("cm1-r1"), staff_row("cm2-r1")])
        await s.flush()
        await add_logins(
            s,
            [
                ("admin", "admin", None),
                ("op-cm1", "operator", "cm1"),
                ("op-cm2", "operator", "cm2"),
                ("sup-st1", "supervisor", "st1"),
            ],
            now=T0,
        )
        for user, staff in (("r-cm1", "cm1-r1"), ("r-cm2", "cm2-r1")):
            await create_user(
                s,
                username=user,
                password=PW,
                role="responder",
                station_id=None,
                display_name=user,
                staff_id=staff,
                now=T0,
            )
    async with api_world(maker, T0) as w:
        yield {"client": w.client, "dispatcher": w.dispatcher, "clock": w.clock}


async def audit_rows(maker: async_sessionmaker[AsyncSession], order_id: int) -> list[AuditRow]:
    async with maker() as s:
        rows = (
            await s.scalars(select(AuditRow).where(AuditRow.kind.like("order_%")).order_by(AuditRow.seq))
        ).all()
    return [r for r in rows if r.detail.get("order_id") == order_id]


async def test_provider_crud_is_for_admins(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    admin, op = await login(c, "admin"), await login(c, "op-cm1")
    assert (await c.post("/api/v1/providers", json=MEALS, headers=op)).status_code == 403
    r = await c.post("/api/v1/providers", json=MEALS, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["kinds"] == ["meal", "shopping"] and r.json()["active"] is True
    assert (await c.post("/api/v1/providers", json=MEALS, headers=admin)).status_code == 409
    assert [p["id"] for p in (await c.get("/api/v1/providers", headers=op)).json()] == ["p-meals"]
    body = {k: v for k, v in MEALS.items() if k != "id"} | {"capacity": 4}
    r = await c.put("/api/v1/providers/p-meals", json=body, headers=admin)
    assert r.status_code == 200 and r.json()["capacity"] == 4
    assert (await c.put("/api/v1/providers/nope", json=body, headers=admin)).status_code == 404
    bad = [
        {**MEALS, "id": "x1", "hours": "8-20"},
        {**MEALS, "id": "x2", "kinds": ["taxi"]},
        {**MEALS, "id": "x3", "radius_km": None},
        {**MEALS, "id": "x4", "lat": 91},
        {**MEALS, "id": "x5", "capacity": 0},
        {**MEALS, "id": "x6", "colour": "red"},
    ]
    for b in bad:
        assert (await c.post("/api/v1/providers", json=b, headers=admin)).status_code == 422, b
    r = await c.post("/api/v1/providers", json={**MEALS, "id": "x7", "stations": ["ghost"]}, headers=admin)
    assert r.status_code == 422 and "ghost" in r.text
    assert (await c.delete("/api/v1/providers/p-meals", headers=admin)).status_code == 204
    assert (await c.get("/api/v1/providers/p-meals", headers=admin)).status_code == 404


async def test_booking_routes_to_the_nearest_open_provider_and_runs_its_lifecycle(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    clock: ManualClock = world["clock"]
    admin, op = await login(c, "admin"), await login(c, "op-cm1")
    assert (await c.post("/api/v1/providers", json=MEALS, headers=admin)).status_code == 201
    r = await c.post(
        "/api/v1/orders", json={"resident_id": "r1", "kind": "meal", "notes": "少盐"}, headers=op
    )
    assert r.status_code == 201, r.text
    o = r.json()
    assert (o["status"], o["provider_id"], o["station_id"], o["source"]) == (
        "assigned",
        "p-meals",
        "cm1",
        "operator",
    )
    assert o["route_reasons"][0] == "NEAREST_AVAILABLE" and o["subsidised"] is True and o["price_cny"] == 12
    assert o["levels"]["accept_within_s"] == 900
    oid = o["id"]
    # the provider's one slot is taken: the next meal goes to the community station
    r2 = await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "meal"}, headers=op)
    assert r2.json()["assignee_station_id"] == "cm1" and r2.json()["provider_id"] is None
    assert ["provider", "p-meals", "AT_CAPACITY"] in r2.json()["route_reasons"]
    # operator hands it to a named responder, who works it from the phone
    r = await c.post(f"/api/v1/orders/{oid}/assign", json={"staff_id": "cm1-r1"}, headers=op)
    assert r.status_code == 200 and r.json()["staff_id"] == "cm1-r1" and r.json()["provider_id"] == "p-meals"
    for bad in ({"staff_id": "cm2-r1"}, {"staff_id": "ghost"}, {"station_id": "ghost"}):
        r = await c.post(f"/api/v1/orders/{oid}/assign", json=bad, headers=op)
        assert r.status_code == 422, bad  # cm2's staff are unknown to cm1's operator
    r = await c.post(f"/api/v1/orders/{r2.json()['id']}/assign", json={"provider_id": "p-meals"}, headers=op)
    assert r.status_code == 200  # over capacity by hand is the operator's call
    r = await c.post(
        f"/api/v1/orders/{oid}/assign", json={"provider_id": "p-meals", "station_id": "cm1"}, headers=op
    )
    assert r.status_code == 422 and "TWO_ASSIGNEES" in r.text
    chat = (await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=op)).json()
    r = await c.post(f"/api/v1/orders/{chat['id']}/assign", json={"provider_id": "p-meals"}, headers=op)
    assert r.status_code == 422 and "KIND_NOT_OFFERED" in r.text
    phone = await login(c, "r-cm1")
    mine = (await c.get("/api/v1/m/orders", headers=phone)).json()
    assert [x["id"] for x in mine] == [oid]
    # the phone shows whom to see and where (navigation links need the coordinates)
    assert (mine[0]["resident_name"], mine[0]["address"], mine[0]["lat"]) == ("王秀英", "建设路1号", 32.692)
    assert (await c.get("/api/v1/orders", headers=phone)).status_code == 403  # phones use /m/
    assert (
        await c.post(f"/api/v1/m/orders/{oid}/cancel", json={"reason": "x"}, headers=phone)
    ).status_code == 404
    other_phone = await login(c, "r-cm2")
    assert (await c.post(f"/api/v1/m/orders/{oid}/accept", headers=other_phone)).status_code == 404
    for action in ("accept", "start"):
        r = await c.post(f"/api/v1/m/orders/{oid}/{action}", headers=phone)
        assert r.status_code == 200, r.text
    clock.advance(35 * 60)
    r = await c.post(f"/api/v1/m/orders/{oid}/done", json={"notes": "已送到"}, headers=phone)
    assert r.status_code == 200 and r.json()["duration_s"] == 35 * 60 and r.json()["done_notes"] == "已送到"
    r = await c.post(f"/api/v1/orders/{oid}/confirm", json={"satisfaction": 5}, headers=op)
    assert r.status_code == 200 and r.json()["satisfaction"] == 5
    r = await c.post(f"/api/v1/orders/{oid}/close", headers=op)
    assert r.json()["status"] == "closed"
    # refused: a closed order cannot move, an unknown action is a 404, bad input a 422
    assert (await c.post(f"/api/v1/orders/{oid}/start", headers=op)).status_code == 409
    assert (await c.post(f"/api/v1/orders/{oid}/fly", headers=op)).status_code == 404
    r = await c.post(f"/api/v1/orders/{r2.json()['id']}/cancel", json={}, headers=op)
    assert r.status_code == 422 and "MISSING_REASON" in r.text
    kinds = [row.kind for row in await audit_rows(maker, oid)]
    assert kinds == [
        "order_created",
        "order_assign",
        "order_assign",
        "order_accept",
        "order_start",
        "order_done",
        "order_confirm",
        "order_close",
    ]
    assert (await verify_log(maker)).ok


async def test_idempotent_bookings_and_validation(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    op = await login(c, "op-cm1")
    key = {**op, "Idempotency-Key": "booking-42"}
    r1 = await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=key)
    r2 = await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=key)
    assert (r1.status_code, r2.status_code) == (201, 200) and r1.json()["id"] == r2.json()["id"]
    assert r1.json()["source"] == "api" and r1.json()["client_ref"] == "booking-42"
    r3 = await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "meal"}, headers=key)
    assert r3.status_code == 409 and "KEY_REUSED" in r3.text
    other = {**(await login(c, "op-cm2")), "Idempotency-Key": "booking-42"}
    r4 = await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=other)
    assert r4.status_code == 409 and str(r1.json()["id"]) not in r4.text  # another's key reveals nothing
    ref = {"resident_id": "r1", "kind": "repair", "client_ref": "ext-7"}
    a = await c.post("/api/v1/orders", json=ref, headers=op)
    b = await c.post("/api/v1/orders", json=ref, headers=op)
    assert a.json()["id"] == b.json()["id"]
    # no provider offers repair and stations do not: booked, waiting for an operator
    assert a.json()["status"] == "created" and a.json()["route_reasons"][0] == "NONE_AVAILABLE"
    for bad in (
        {"resident_id": "r1", "kind": "taxi"},
        {"resident_id": "r1"},
        {"resident_id": "r1", "kind": "meal", "booked_for": "2026-12-07T10:00:00"},
        {"resident_id": "r1", "kind": "meal", "extra": 1},
    ):
        assert (await c.post("/api/v1/orders", json=bad, headers=op)).status_code == 422, bad
    assert (
        await c.post("/api/v1/orders", json={"resident_id": "ghost", "kind": "meal"}, headers=op)
    ).status_code == 404


async def test_scope_and_roles(world: dict[str, Any], maker: async_sessionmaker[AsyncSession]) -> None:
    c: httpx.AsyncClient = world["client"]
    op1, op2, sup = await login(c, "op-cm1"), await login(c, "op-cm2"), await login(c, "sup-st1")
    oid = (await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=op1)).json()[
        "id"
    ]
    assert (await c.get(f"/api/v1/orders/{oid}", headers=op2)).status_code == 404
    assert (await c.get("/api/v1/orders", headers=op2)).json() == []
    assert (
        await c.post(f"/api/v1/orders/{oid}/cancel", json={"reason": "x"}, headers=op2)
    ).status_code == 404
    # an operator cannot book for a resident outside their stations
    assert (
        await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=op2)
    ).status_code == 404
    assert (await c.get(f"/api/v1/orders/{oid}", headers=sup)).status_code == 200
    assert [o["id"] for o in (await c.get("/api/v1/orders", headers=sup)).json()] == [oid]
    assert (
        await c.post(f"/api/v1/orders/{oid}/cancel", json={"reason": "x"}, headers=sup)
    ).status_code == 403
    assert (
        await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=sup)
    ).status_code == 403
    r = await c.post(f"/api/v1/orders/{oid}/cancel", json={"reason": "家属已安排"}, headers=op1)
    assert r.json()["status"] == "cancelled" and r.json()["cancel_reason"] == "家属已安排"
    assert (await c.get("/api/v1/orders", headers=op1)).json() == []
    assert [o["id"] for o in (await c.get("/api/v1/orders?status=closed", headers=op1)).json()] == [oid]
    assert (await c.get("/api/v1/services", headers=sup)).json()["kinds"]["meal"]["name_zh"] == "助餐"


async def test_an_order_never_enters_the_emergency_queue(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    op = await login(c, "op-cm1")
    assert (
        await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "medical"}, headers=op)
    ).status_code == 201
    assert (await c.get("/api/v1/calls?status=all", headers=op)).json() == []


async def test_an_orders_timeline_lists_its_audit_rows_in_scope_without_phone_numbers(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    clock: ManualClock = world["clock"]
    admin, op1, op2 = await login(c, "admin"), await login(c, "op-cm1"), await login(c, "op-cm2")
    sup, phone = await login(c, "sup-st1"), await login(c, "r-cm1")
    assert (await c.post("/api/v1/providers", json=MEALS, headers=admin)).status_code == 201
    booking = {"resident_id": "r1", "kind": "meal", "notes": "女儿电话 13812345678"}
    oid = (await c.post("/api/v1/orders", json=booking, headers=op1)).json()["id"]
    other = (await c.post("/api/v1/orders", json={"resident_id": "r1", "kind": "chat"}, headers=op1)).json()
    r = await c.post(f"/api/v1/orders/{oid}/assign", json={"staff_id": "cm1-r1"}, headers=op1)
    assert r.status_code == 200, r.text
    clock.advance(60)
    for action in ("accept", "start"):
        assert (await c.post(f"/api/v1/m/orders/{oid}/{action}", headers=phone)).status_code == 200
    clock.advance(20 * 60)
    done = {"notes": "已送到, 邻居 0719-8123456 帮忙"}
    assert (await c.post(f"/api/v1/m/orders/{oid}/done", json=done, headers=phone)).status_code == 200

    r = await c.get(f"/api/v1/orders/{oid}/timeline", headers=op1)
    assert r.status_code == 200, r.text
    steps = r.json()
    assert [(s["kind"], s["actor"]) for s in steps] == [
        ("order_created", "user:op-cm1"),
        ("order_assign", "system:routing"),
        ("order_assign", "user:op-cm1"),
        ("order_accept", "user:r-cm1"),
        ("order_start", "user:r-cm1"),
        ("order_done", "user:r-cm1"),
    ]
    assert [s["seq"] for s in steps] == sorted(s["seq"] for s in steps)
    assert steps[0]["detail"] == {"source": "operator"}
    assert steps[1]["detail"]["provider_id"] == "p-meals" and steps[1]["detail"]["to"] == "assigned"
    assert steps[2]["detail"]["staff_id"] == "cm1-r1"
    assert steps[5]["detail"]["duration_s"] == 20 * 60
    assert steps[5]["detail"]["notes"] == "已送到, 邻居 071*-***3456 帮忙"
    assert steps[3]["at"].startswith("2026-12-07T02:01")
    assert "8123456" not in r.text and "13812345678" not in r.text
    # the other order's rows are not this one's
    others = (await c.get(f"/api/v1/orders/{other['id']}/timeline", headers=op1)).json()
    assert others[0]["kind"] == "order_created" and {s["seq"] for s in others}.isdisjoint(
        s["seq"] for s in steps
    )

    # scoped like the order: another station's operator learns nothing; the street's
    # supervisor reads it
    r = await c.get(f"/api/v1/orders/{oid}/timeline", headers=op2)
    assert r.status_code == 404 and "order_" not in r.text
    assert (await c.get("/api/v1/orders/99999/timeline", headers=op1)).status_code == 404
    assert (await c.get(f"/api/v1/orders/{oid}/timeline", headers=sup)).status_code == 200
    assert (await c.get(f"/api/v1/orders/{oid}/timeline")).status_code == 401
    async with maker() as s:
        reads = (
            await s.execute(
                select(RecordRead.username, RecordRead.resident_id).where(
                    RecordRead.route == "GET /api/v1/orders/{order_id}/timeline"
                )
            )
        ).all()
    # a read per request that answered (op-cm1 twice for the other order, once for this one)
    assert sorted(set(reads)) == [("op-cm1", "r1"), ("sup-st1", "r1")]
    assert ("op-cm2", "r1") not in reads

"""The visits API over HTTP with real tokens: scope, the phone's check-in and form,
cancelling, a follow-up after a real call closes, and the monthly compliance report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.auth.models import RecordRead
from dispatcher.auth.users import create_user
from dispatcher.calls.models import Call
from dispatcher.orders.catalogue_file import load_catalogue
from dispatcher.orders.models import Order
from dispatcher.orders.schemas import BookingIn
from dispatcher.orders.service import OrderError, create_order
from dispatcher.visits import actions
from tests.dispatcher.visits.conftest import add_visit_county
from tests.support.api import ApiWorld, api_world, bearer
from tests.support.events import store_event
from tests.support.registry import PW, add_logins

Maker = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)

pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def world(maker: Maker) -> AsyncIterator[ApiWorld]:
    await add_visit_county(maker)
    async with maker() as s, s.begin():
        await add_logins(
            s,
            [
                ("op-cm1", "operator", "cm1"),
                ("op-st2", "operator", "st2"),
                ("sup-county", "supervisor", "county"),
                ("sup-st1", "supervisor", "st1"),
            ],
            now=T0,
        )
        for username, staff in (("li", "cm1-r1"), ("zhao", "cm1-n1"), ("sun", "cm2-r1")):
            await create_user(
                s,
                username=username,
                password=PW,
                role="responder",
                station_id=None,
                display_name=username,
                staff_id=staff,
                now=T0,
            )
    async with api_world(maker, T0) as w:
        await w.dispatcher.visits_once()
        yield w


async def listed(w: ApiWorld, user: str, path: str = "/api/v1/visits") -> list[dict[str, Any]]:
    r = await w.client.get(path, headers=await bearer(w.client, user))
    assert r.status_code == 200, r.text
    return list(r.json())


async def test_each_sees_the_visits_of_their_own_stations(world: ApiWorld) -> None:
    assert [(v["resident_id"], v["station_id"]) for v in await listed(world, "op-cm1")] == [("r1", "cm1")]
    assert [v["resident_id"] for v in await listed(world, "op-st2")] == ["r2"]
    assert sorted(v["resident_id"] for v in await listed(world, "sup-county")) == ["r1", "r2"]
    [v] = await listed(world, "op-cm1")
    assert (
        v["resident_name"] == "王秀英"
        and v["category"] == "risk:high_need_alone"
        and v["staff_id"] == "cm1-r1"
    )
    c = world.client
    op2 = await bearer(c, "op-st2")
    r = await c.post(f"/api/v1/visits/{v['id']}/checkin", headers=op2)
    assert r.status_code == 404  # not in their scope
    li = await bearer(c, "li")
    assert (await c.get("/api/v1/visits", headers=li)).status_code == 403  # responders use /m/


async def test_the_phone_checks_in_and_files_the_form_which_can_ask_for_a_service(
    world: ApiWorld, maker: Maker
) -> None:
    c = world.client
    [mine] = await listed(world, "li", "/api/v1/m/visits")
    assert mine["resident_id"] == "r1"
    assert [v["id"] for v in await listed(world, "zhao", "/api/v1/m/visits")] == [mine["id"]]  # same station
    [r2_visit] = await listed(world, "sun", "/api/v1/m/visits")
    assert r2_visit["resident_id"] == "r2"
    vid = mine["id"]
    li, sun = await bearer(c, "li"), await bearer(c, "sun")
    assert (await c.post(f"/api/v1/m/visits/{vid}/checkin", headers=sun)).status_code == 404
    r = await c.post(f"/api/v1/m/visits/{vid}/checkin", headers=li, json={"lat": 32.69})
    assert r.status_code == 422  # lat without lon
    r = await c.post(f"/api/v1/m/visits/{vid}/checkin", headers=li, json={"lat": 32.692, "lon": 112.852})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["checkin_at"].startswith("2026-12-06T03:00") and body["checkin_lat"] == 32.692
    assert (await c.post(f"/api/v1/m/visits/{vid}/checkin", headers=li)).status_code == 409

    world.clock.advance(1800)
    form = {
        "seen": "in_person",
        "health": "血压偏高",
        "needs_found": "需要助餐",
        "requested_service_kind": "meal",
    }
    assert (await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json=form)).status_code == 422
    assert (
        await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json={**form, "seen": "x"})
    ).status_code == 422
    r = await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json={**form, "follow_up_needed": True})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "done" and done["done_by"] == "li (li)" and done["seen"] == "in_person"
    assert done["follow_up_needed"] is True and done["requested_service_kind"] == "meal"
    assert (
        await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json={"seen": "by_phone"})
    ).status_code == 409
    # by phone, without a check-in
    r = await c.post(f"/api/v1/m/visits/{r2_visit['id']}/done", headers=sun, json={"seen": "by_phone"})
    assert r.status_code == 200 and r.json()["checkin_at"] is None
    assert (await c.post(f"/api/v1/m/visits/{vid}/cancel", headers=li, json={"reason": "x"})).status_code in (
        404,
        405,
    )
    async with maker() as s:
        rows = (
            await s.execute(
                select(AuditRow.kind, AuditRow.actor, AuditRow.detail)
                .where(AuditRow.kind.like("visit_%"))
                .order_by(AuditRow.seq)
            )
        ).all()
    assert [(k, a) for k, a, _ in rows] == [
        ("visit_checked_in", "li (li)"),
        ("visit_done", "li (li)"),
        ("visit_done", "sun (sun)"),
    ]
    assert rows[1][2]["requested_service_kind"] == "meal" and rows[1][2]["on_time"] is True
    async with maker() as s:
        reads = set(
            (await s.execute(select(RecordRead.username, RecordRead.resident_id, RecordRead.route))).all()
        )
    assert ("li", "r1", "GET /api/v1/m/visits") in reads and ("sun", "r2", "GET /api/v1/m/visits") in reads


async def test_the_console_cancels_with_a_reason_and_a_closed_visit_refuses_more(world: ApiWorld) -> None:
    c = world.client
    [v] = await listed(world, "op-st2")
    op = await bearer(c, "op-st2")
    assert (
        await c.post(f"/api/v1/visits/{v['id']}/cancel", headers=op, json={"reason": ""})
    ).status_code == 422
    r = await c.post(f"/api/v1/visits/{v['id']}/cancel", headers=op, json={"reason": "住院 / in hospital"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert (await c.post(f"/api/v1/visits/{v['id']}/checkin", headers=op)).status_code == 409
    assert (await c.post("/api/v1/visits/99999/checkin", headers=op)).status_code == 404
    assert (await c.post(f"/api/v1/visits/{2**40}/checkin", headers=op)).status_code == 422
    assert await listed(world, "op-st2") == []
    [gone] = (await c.get("/api/v1/visits?status=cancelled", headers=op)).json()
    assert gone["cancel_reason"] == "住院 / in hospital"


async def test_a_resolved_call_brings_a_follow_up_visit_within_24_hours(
    world: ApiWorld, maker: Maker
) -> None:
    c = world.client
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await world.dispatcher.intake_once()
    async with maker() as s:
        cid = int(await s.scalar(select(Call.id)) or 0)
    op = await bearer(c, "op-cm1")
    assert (await c.post(f"/api/v1/calls/{cid}/acknowledge", headers=op)).status_code == 200
    world.clock.advance(600)
    r = await c.post(f"/api/v1/calls/{cid}/resolve", headers=op, json={"outcome": "taken_to_hospital"})
    assert r.status_code == 200, r.text
    closed = T0 + timedelta(seconds=600)
    world.clock.advance(60)
    await world.dispatcher.visits_once()
    follow = [v for v in await listed(world, "op-cm1") if v["period"] == f"call-{cid}"]
    assert len(follow) == 1 and follow[0]["category"] == "follow_up"
    assert datetime.fromisoformat(follow[0]["due_at"]) == closed + timedelta(hours=24)
    await world.dispatcher.visits_once()
    assert len([v for v in await listed(world, "op-cm1") if v["period"] == f"call-{cid}"]) == 1


async def test_the_monthly_compliance_report_is_scoped_and_checks_the_month(world: ApiWorld) -> None:
    c = world.client
    [mine] = await listed(world, "li", "/api/v1/m/visits")
    li = await bearer(c, "li")
    assert (
        await c.post(f"/api/v1/m/visits/{mine['id']}/done", headers=li, json={"seen": "in_person"})
    ).status_code == 200
    sup = await bearer(c, "sup-county")
    r = await c.get("/api/v1/reports/visits?month=2026-12", headers=sup)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["month"] == "2026-12" and body["timezone"] == "Asia/Shanghai"
    # r1's weekly visit of week 49 started on Monday 30 November: it counts in November
    nov = (await c.get("/api/v1/reports/visits?month=2026-11", headers=sup)).json()["stations"]
    assert [(s["station_id"], s["due"], s["done_on_time"]) for s in nov] == [("cm1", 1, 1)]
    assert [(s["station_id"], s["due"], s["open"], s["residents_not_visited"]) for s in body["stations"]] == [
        ("cm2", 1, 1, ["r2"])
    ]
    st1 = await bearer(c, "sup-st1")
    assert (await c.get("/api/v1/reports/visits?month=2026-12", headers=st1)).json()["stations"] == []
    assert (
        await c.get("/api/v1/reports/visits?month=2026-12&station_id=cm2", headers=st1)
    ).status_code == 404
    for bad in ("2026-13", "message", "1999-12"):
        r = await c.get(f"/api/v1/reports/visits?month={bad}", headers=sup)
        # FastAPI's own 422 shape, as the OpenAPI schema says (the API sweep found a plain string)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "month"], r.text
    assert (await c.get("/api/v1/reports/visits?month=12-2026", headers=sup)).status_code == 422
    op = await bearer(c, "op-cm1")
    assert (await c.get("/api/v1/reports/visits?month=2026-12", headers=op)).status_code == 403


async def visit_orders(maker: Maker, visit_id: int) -> list[Order]:
    async with maker() as s:
        return list(
            (await s.scalars(select(Order).where(Order.visit_id == visit_id).order_by(Order.id))).all()
        )


async def test_the_form_opens_one_routed_order_per_service_asked_for_once_only(
    world: ApiWorld, maker: Maker
) -> None:
    c = world.client
    li = await bearer(c, "li")
    [mine] = await listed(world, "li", "/api/v1/m/visits")
    vid = mine["id"]
    assert mine["orders"] == []
    form = {
        "seen": "in_person",
        "needs_found": "做饭困难，家里脏乱",
        "follow_up_needed": True,
        "service_kinds": ["meal", "cleaning"],
        "service_note": "午餐少盐，联系女儿 13812345678",
    }
    # refused as a whole, and nothing is written: an unknown kind, a kind without follow-up
    r = await c.post(
        f"/api/v1/m/visits/{vid}/done", headers=li, json={**form, "service_kinds": ["meal", "massage"]}
    )
    assert r.status_code == 422 and "massage" in r.text, r.text
    r = await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json={**form, "follow_up_needed": False})
    assert r.status_code == 422
    r = await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json={**form, "service_kinds": ["Meal!"]})
    assert r.status_code == 422
    assert await visit_orders(maker, vid) == [] and [
        v["id"] for v in await listed(world, "li", "/api/v1/m/visits")
    ] == [vid]

    world.clock.advance(600)
    r = await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json=form)
    assert r.status_code == 200, r.text
    done = r.json()
    orders = await visit_orders(maker, vid)
    assert [o.kind for o in orders] == ["meal", "cleaning"]
    assert done["orders"] == [{"id": o.id, "kind": o.kind, "status": o.status} for o in orders]
    assert done["status"] == "done" and done["requested_service_kind"] == "meal"
    for o in orders:
        assert (o.source, o.visit_id, o.resident_id, o.station_id, o.created_by) == (
            "visit",
            vid,
            "r1",
            "cm1",
            "user:li",
        )
        assert o.request_notes == form["service_note"] and o.levels["accept_within_s"] > 0
        assert o.created_at == world.clock.now() and o.route_reasons  # routed like any booking
    # the meal goes to the community station (no provider in this county), cleaning to
    # nobody yet (only providers offer it): booked, waiting for an operator
    assert (orders[0].status, orders[0].assignee_station_id) == ("assigned", "cm1")
    assert (orders[1].status, orders[1].route_reasons[0]) == ("created", "NONE_AVAILABLE")

    async with maker() as s:
        rows = (
            await s.execute(
                select(AuditRow.kind, AuditRow.actor, AuditRow.detail)
                .where(AuditRow.kind.in_(["order_created", "order_assign", "visit_done"]))
                .order_by(AuditRow.seq)
            )
        ).all()
    assert [(k, a) for k, a, _ in rows] == [
        ("order_created", "user:li"),
        ("order_assign", "system:routing"),
        ("order_created", "user:li"),
        ("visit_done", "li (li)"),
    ]
    assert rows[0][2]["visit_id"] == vid and rows[0][2]["source"] == "visit"
    assert rows[3][2]["order_ids"] == [o.id for o in orders]
    assert rows[3][2]["service_kinds"] == ["meal", "cleaning"]
    assert (await verify_log(maker)).ok

    # the same form again (a retry after a lost answer): the same visit, no new order
    world.clock.advance(60)
    again = await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json=form)
    assert again.status_code == 200 and again.json() == done
    # another form on a visit already done is refused, and opens nothing
    r = await c.post(f"/api/v1/m/visits/{vid}/done", headers=li, json={**form, "service_kinds": ["chat"]})
    assert r.status_code == 409
    zhao = await bearer(c, "zhao")  # same station, another visitor: not their form
    assert (await c.post(f"/api/v1/m/visits/{vid}/done", headers=zhao, json=form)).status_code == 409
    assert [o.id for o in await visit_orders(maker, vid)] == [o.id for o in orders]
    async with maker() as s:
        dones = (await s.scalars(select(AuditRow.id).where(AuditRow.kind == "visit_done"))).all()
    assert len(dones) == 1

    # the console sees the order and where it came from
    op = await bearer(c, "op-cm1")
    r = await c.get(f"/api/v1/orders/{orders[0].id}", headers=op)
    assert r.status_code == 200 and (r.json()["source"], r.json()["visit_id"]) == ("visit", vid)
    [shown] = [v for v in await listed(world, "op-cm1", "/api/v1/visits?status=done") if v["id"] == vid]
    assert [o["kind"] for o in shown["orders"]] == ["meal", "cleaning"]


async def test_an_order_that_cannot_be_opened_leaves_the_visit_open(
    world: ApiWorld, maker: Maker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form and its orders are one transaction: a failure in the second order undoes
    the first order and the form."""
    real = actions.create_order
    made: list[str] = []

    async def second_fails(session: AsyncSession, **kw: Any) -> tuple[Order, bool]:
        if made:
            raise OrderError(409, "the booking system refused")
        made.append(kw["booking"].kind)
        return await real(session, **kw)

    monkeypatch.setattr(actions, "create_order", second_fails)
    c = world.client
    op = await bearer(c, "op-st2")  # the console's form works the same
    [v] = await listed(world, "op-st2")
    form = {"seen": "by_phone", "follow_up_needed": True, "service_kinds": ["chat", "meal"]}
    r = await c.post(f"/api/v1/visits/{v['id']}/done", headers=op, json=form)
    assert r.status_code == 409 and "refused" in r.text
    assert made == ["chat"] and await visit_orders(maker, v["id"]) == []
    async with maker() as s:
        assert await s.scalar(select(Order.id)) is None
    [still] = await listed(world, "op-st2")
    assert still["id"] == v["id"] and still["status"] != "done"
    monkeypatch.setattr(actions, "create_order", real)
    r = await c.post(f"/api/v1/visits/{v['id']}/done", headers=op, json=form)
    assert r.status_code == 200, r.text
    assert [(o["kind"]) for o in r.json()["orders"]] == ["chat", "meal"]
    assert {o.created_by for o in await visit_orders(maker, v["id"])} == {"user:op-st2"}
    assert (await verify_log(maker)).ok


async def test_one_order_per_visit_and_kind_in_the_database(world: ApiWorld, maker: Maker) -> None:
    [v] = await listed(world, "op-st2")
    catalogue = load_catalogue()
    booking = BookingIn(resident_id="r2", kind="meal")
    async with maker() as s, s.begin():
        await create_order(
            s,
            catalogue=catalogue,
            booking=booking,
            source="visit",
            actor="test",
            scope=None,
            client_ref=None,
            now=T0,
            visit_id=v["id"],
        )
    with pytest.raises(IntegrityError):
        async with maker() as s, s.begin():
            await create_order(
                s,
                catalogue=catalogue,
                booking=booking,
                source="visit",
                actor="test",
                scope=None,
                client_ref=None,
                now=T0,
                visit_id=v["id"],
            )
            await s.flush()

"""The responder's phone API: pages, accept/decline, actions, scope — through HTTP with real tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.shell.app import create_app
from config.settings import load_settings
from dispatcher.audit import service as audit
from dispatcher.audit.models import AuditRow
from dispatcher.auth.models import RecordRead
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user
from dispatcher.calls import paging
from dispatcher.calls.models import Call
from dispatcher.engine.process import Dispatcher, load_context
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.paging.policy import PagingMode, PagingPolicy
from dispatcher.registry.models import Contact, Staff
from tests.conftest import add_small_registry
from tests.support.clock import ManualClock
from tests.support.events import store_event

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
Maker = async_sessionmaker[AsyncSession]


pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def world(maker: Maker) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        s.add_all(
            [
                Staff(
                    id="cm1-r1",
                    station_id="cm1",
                    name="李师傅",
                    role="responder",
                    phone="13800000001",
                    on_duty=True,
                ),
                Staff(
                    id="cm1-r2",
                    station_id="cm1",
                    name="赵护士",
                    role="nurse",
                    phone="13800000002",
                    on_duty=True,
                ),
                Staff(
                    id="cm1-r3",
                    station_id="cm1",
                    name="孙师傅",
                    role="responder",
                    phone="13800000003",
                    on_duty=False,
                ),
                Contact(resident_id="r1", name="王小明", relation="儿子", phone="13900000001", priority=1),
            ]
        )
        await s.flush()
        for username, role, staff in (("li", "responder", "cm1-r1"), ("zhao", "responder", "cm1-r2")):
            await create_user(
                s,
                username=username,
                password="password-123",
                role=role,
                station_id=None,
                display_name=username,
                staff_id=staff,
                now=T0,
            )
        await create_user(
            s,
            username="op-cm1",
            password="password-123",
            role="operator",
            station_id="cm1",
            display_name="op",
            now=T0,
        )
    settings = load_settings(database_url="sqlite:///unused.db")
    clock = ManualClock(T0)
    bus = MemoryBus()
    d = Dispatcher(settings=settings, maker=maker, bus=bus, clock=clock, mqtt=None, notifier=LogNotifier())
    app = create_app(maker, signer=TokenSigner(b"k" * 32), ctx=load_context(settings), clock=clock, bus=bus)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield {"client": client, "dispatcher": d, "clock": clock}


async def login(client: httpx.AsyncClient, user: str) -> dict[str, str]:
    r = await client.post("/api/v1/auth/token", data={"username": user, "password": "password-123"})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def open_call_and_page(world: dict[str, Any], maker: Maker, mode: PagingMode) -> int:
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await world["dispatcher"].intake_once()
    async with maker() as s, s.begin():
        call_id = int(await s.scalar(select(Call.id)) or 0)
        await paging.step(s, call_id=call_id, station_id="cm1", policy=PagingPolicy(mode=mode), now=T0)
    return call_id


async def test_a_responder_sees_only_their_pages_and_never_the_console(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    li = await login(c, "li")
    assert (await c.get("/api/v1/calls", headers=li)).status_code == 403
    assert (await c.get("/api/v1/m/cards", headers=li)).json() == []
    me = (await c.get("/api/v1/m/me", headers=li)).json()
    assert me["name"] == "李师傅" and me["availability"] == "on_duty" and me["station_name"] == "社区站"
    op = await login(c, "op-cm1")
    assert (await c.get("/api/v1/m/cards", headers=op)).status_code == 403  # the phone is for responders

    call_id = await open_call_and_page(world, maker, PagingMode.one_by_one)
    [card] = (await c.get("/api/v1/m/cards", headers=li)).json()
    assert card["call_id"] == call_id and card["page_outcome"] == "pending" and card["event_types"] == ["sos"]
    assert card["resident"]["name"] == "王秀英" and card["resident"]["capacity_level"] == 3
    assert card["resident"]["conditions"] == ["高血压"] and card["address"] == "建设路1号"
    assert card["contacts"] == [{"name": "王小明", "relation": "儿子", "phone": "13900000001"}]
    zhao = await login(c, "zhao")
    assert (await c.get("/api/v1/m/cards", headers=zhao)).json() == []  # one by one: not paged yet
    async with maker() as s:
        reads = (await s.execute(select(RecordRead.username, RecordRead.resident_id))).all()
    assert ("li", "r1") in reads  # the read of the resident's record is logged


async def test_accept_then_en_route_on_scene_resolved_from_the_phone(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    clock: ManualClock = world["clock"]
    call_id = await open_call_and_page(world, maker, PagingMode.all_at_once)
    li, zhao = await login(c, "li"), await login(c, "zhao")
    [page_li] = (await c.get("/api/v1/m/cards", headers=li)).json()
    [page_zhao] = (await c.get("/api/v1/m/cards", headers=zhao)).json()
    clock.advance(15)
    r = await c.post(f"/api/v1/m/pages/{page_li['page_id']}/accept", headers=li)
    assert r.status_code == 200, r.text
    assert r.json()["card"]["assignment_state"] == "dispatched"
    r = await c.post(f"/api/v1/m/pages/{page_zhao['page_id']}/accept", headers=zhao)
    assert r.status_code == 409  # taken: the first acceptance owns it
    assert (await c.get("/api/v1/m/cards", headers=zhao)).json() == []
    assert (await c.post(f"/api/v1/m/calls/{call_id}/en-route", headers=zhao)).status_code == 404
    for action in ("en-route", "arrive"):
        clock.advance(60)
        r = await c.post(f"/api/v1/m/calls/{call_id}/{action}", headers=li)
        assert r.status_code == 200, r.text
    assert r.json()["assignment_state"] == "on_scene"
    r = await c.post(
        f"/api/v1/m/calls/{call_id}/resolve",
        headers=li,
        json={"outcome": "helped_on_site", "note": "血压已稳定"},
    )
    assert r.status_code == 200 and r.json() is None  # closed: no longer on the phone
    async with maker() as s:
        call = await s.get(Call, call_id)
        assert call is not None and call.status == "resolved" and call.outcome == "helped_on_site"
        rows = (
            await s.execute(
                select(AuditRow.kind, AuditRow.actor)
                .where(AuditRow.call_id == call_id)
                .order_by(AuditRow.seq)
            )
        ).all()
        acks = (
            (
                await s.execute(
                    select(Notification.body)
                    .where(Notification.purpose == "device_ack")
                    .order_by(Notification.id)
                )
            )
            .scalars()
            .all()
        )
    by_li = [k for k, actor in rows if actor == "user:li"]
    assert by_li[:1] == ["page_accepted"] and {
        "acknowledged",
        "responder_dispatched",
        "en_route",
        "on_scene",
        "resolved",
    } <= set(by_li)
    assert ("page_withdrawn", "user:li") in rows
    # the device heard the same acks as from the console
    assert [a["state"] for a in acks] == ["assigned", "en_route", "on_scene", "resolved"]
    assert (await audit.verify_log(maker)).ok


async def test_a_decline_pages_the_next_person_at_once(world: dict[str, Any], maker: Maker) -> None:
    c: httpx.AsyncClient = world["client"]
    await open_call_and_page(world, maker, PagingMode.one_by_one)
    li, zhao = await login(c, "li"), await login(c, "zhao")
    [card] = (await c.get("/api/v1/m/cards", headers=li)).json()
    r = await c.post(f"/api/v1/m/pages/{card['page_id']}/decline", headers=li, json={"reason": "too_far"})
    assert r.status_code == 200 and r.json() == {"result": "declined", "card": None}
    [next_card] = (await c.get("/api/v1/m/cards", headers=zhao)).json()
    assert next_card["page_outcome"] == "pending"
    # availability is the person's own, and an off-duty person is never paged
    r = await c.put("/api/v1/m/availability", headers=zhao, json={"availability": "busy"})
    assert r.status_code == 200 and r.json()["availability"] == "busy"
    assert (
        await c.put("/api/v1/m/availability", headers=zhao, json={"availability": "asleep"})
    ).status_code == 422


async def test_the_phone_page_and_its_assets_are_served_locally(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    page = await c.get("/m/")
    assert (
        page.status_code == 200
        and "/m/static/phone.js" in page.text
        and "http" not in page.text.split("<body>")[0].replace("http-equiv", "")
    )
    # the page may ask for the phone's position (a visit's check-in), for itself only
    assert page.headers["permissions-policy"] == "camera=(), microphone=(), geolocation=(self)"
    for path in (
        "/m/static/phone.js",
        "/m/static/phone.css",
        "/m/static/i18n/en.json",
        "/m/static/i18n/zh-CN.json",
        "/m/static/icon.svg",
    ):
        assert (await c.get(path)).status_code == 200, path
    manifest = await c.get("/m/manifest.webmanifest")
    assert manifest.json()["scope"] == "/m/" and manifest.headers["content-type"].startswith(
        "application/manifest+json"
    )
    sw = await c.get("/m/sw.js")
    assert sw.status_code == 200 and "/api/" in sw.text and sw.headers["service-worker-allowed"] == "/m/"


async def _page_ids(maker: Maker, call_id: int) -> list[tuple[str, str]]:
    async with maker() as s:
        return [(p.staff_id, p.outcome) for p in await paging.pages_of(s, call_id=call_id)]


async def test_escalation_pages_one_by_one_and_the_phone_takes_the_call(
    world: dict[str, Any], maker: Maker
) -> None:
    """SOS → the station's people are paged by the escalation timers (config/escalation.yaml):
    the first ignores it, the next is paged after the timeout, the off-duty one never; the
    phone's acceptance acknowledges the call and stops the paging."""
    c: httpx.AsyncClient = world["client"]
    d: Dispatcher = world["dispatcher"]
    clock: ManualClock = world["clock"]
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    await d.timers_once()
    async with maker() as s:
        call_id = int(await s.scalar(select(Call.id)) or 0)
    assert await _page_ids(maker, call_id) == [("cm1-r1", "pending")]  # roster order; 孙 is off duty
    li, zhao = await login(c, "li"), await login(c, "zhao")
    assert len((await c.get("/api/v1/m/cards", headers=li)).json()) == 1
    clock.advance(31)  # li lets it ring out
    await d.timers_once()
    assert await _page_ids(maker, call_id) == [("cm1-r1", "timed_out"), ("cm1-r2", "pending")]
    assert (await c.get("/api/v1/m/cards", headers=li)).json() == []
    [card] = (await c.get("/api/v1/m/cards", headers=zhao)).json()
    r = await c.post(f"/api/v1/m/pages/{card['page_id']}/accept", headers=zhao)
    assert r.status_code == 200, r.text
    async with maker() as s:
        call = await s.get(Call, call_id)
        assert call is not None and call.status == "dispatched"
    clock.advance(31)
    await d.timers_once()  # the paging step is stale now: acknowledged
    assert await _page_ids(maker, call_id) == [("cm1-r1", "timed_out"), ("cm1-r2", "accepted")]
    # the console shows who was paged and who accepted, on the call's timeline
    op = await login(c, "op-cm1")
    detail = (await c.get(f"/api/v1/calls/{call_id}", headers=op)).json()
    timeline = detail["timeline"]
    paged = [
        (row["kind"], row["detail"].get("staff_id")) for row in timeline if row["kind"].startswith("page")
    ]
    assert paged == [
        ("paged", "cm1-r1"),
        ("page_timed_out", "cm1-r1"),
        ("paged", "cm1-r2"),
        ("page_accepted", "cm1-r2"),
    ]
    # and as its own list: who, how, when, delivered or not (no channels here: the app only)
    assert [(p["staff_id"], p["channel"], p["outcome"], p["delivery"]) for p in detail["pages"]] == [
        ("cm1-r1", "app", "timed_out", "pending"),
        ("cm1-r2", "app", "accepted", "pending"),
    ]
    assert detail["pages"][1]["name"] and detail["pages"][1]["paged_at"]


async def test_taken_on_the_console_or_closed_withdraws_the_pages(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    call_id = await open_call_and_page(world, maker, PagingMode.all_at_once)
    assert await _page_ids(maker, call_id) == [("cm1-r1", "pending"), ("cm1-r2", "pending")]
    op = await login(c, "op-cm1")
    assert (await c.post(f"/api/v1/calls/{call_id}/acknowledge", headers=op)).status_code == 200
    assert await _page_ids(maker, call_id) == [("cm1-r1", "withdrawn"), ("cm1-r2", "withdrawn")]
    assert (await c.get("/api/v1/m/cards", headers=await login(c, "li"))).json() == []


async def test_a_call_closed_before_anyone_answered_withdraws_its_pages(
    world: dict[str, Any], maker: Maker
) -> None:
    c: httpx.AsyncClient = world["client"]
    call_id = await open_call_and_page(world, maker, PagingMode.one_by_one)
    assert await _page_ids(maker, call_id) == [("cm1-r1", "pending")]
    op = await login(c, "op-cm1")
    r = await c.post(f"/api/v1/calls/{call_id}/cancel", headers=op, json={"false_alarm": True})
    assert r.status_code == 200, r.text
    assert await _page_ids(maker, call_id) == [("cm1-r1", "withdrawn")]

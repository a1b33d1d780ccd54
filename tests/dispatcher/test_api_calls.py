"""The call lifecycle through the HTTP API with real tokens, and scope enforced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import load_settings
from dispatcher.api import create_app
from dispatcher.auth import TokenSigner, create_user
from dispatcher.bus import MemoryBus
from dispatcher.engine import Dispatcher, load_context
from dispatcher.models import Home, Staff, Station
from dispatcher.notifiers import LogNotifier
from tests.conftest import add_small_registry
from tests.dispatcher.test_engine import ManualClock, store_event

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    from argon2 import PasswordHasher

    import dispatcher.auth as auth

    monkeypatch.setattr(
        auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1), raising=False
    )


@pytest.fixture
async def world(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        s.add(
            Station(
                id="st2",
                name="另一街道",
                tier="street",
                kind="street_centre",
                parent_id="county",
                lat=32.6,
                lon=112.9,
            )
        )
        await s.flush()
        s.add(
            Station(
                id="cm2",
                name="另一社区",
                tier="community",
                kind="day_care_centre",
                parent_id="st2",
                lat=32.601,
                lon=112.901,
            )
        )
        await s.flush()
        s.add(Home(id="h2", station_id="cm2", address="另一路2号", lat=32.602, lon=112.902))
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
                    id="cm2-r1",
                    station_id="cm2",
                    name="钱师傅",
                    role="responder",
                    phone="13800000009",
                    on_duty=True,
                ),
            ]
        )
        for username, role, station in (
            ("op-cm1", "operator", "cm1"),
            ("op-cm1-b", "operator", "cm1"),
            ("op-cm2", "operator", "cm2"),
            ("sup-st1", "supervisor", "st1"),
            ("op-county", "operator", "county"),
        ):
            await create_user(
                s,
                username=username,
                password="password-123",
                role=role,
                station_id=station,
                display_name=username,
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


async def test_full_lifecycle_through_the_api(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    d: Dispatcher = world["dispatcher"]
    clock: ManualClock = world["clock"]
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()
    op = await login(c, "op-cm1")
    r = await c.get("/api/v1/calls", headers=op)
    assert r.status_code == 200
    [call] = r.json()
    assert call["status"] == "assigned" and call["priority"] in ("P1", "P2") and call["tier"] == "community"
    assert {k: call["events"][0][k] for k in ("device_id", "event_id", "type")} == {
        "device_id": "h1-btn",
        "event_id": "e1",
        "type": "sos",
    }
    assert {
        "id",
        "status",
        "priority",
        "priority_reasons",
        "home_id",
        "station_id",
        "tier",
        "events",
        "opened_at",
        "acknowledged_at",
        "resolved_at",
        "outcome",
    } <= set(call)
    assert call["opened_at"].endswith("Z") or "+" in call["opened_at"]
    cid = call["id"]

    clock.advance(12)
    r = await c.post(f"/api/v1/calls/{cid}/acknowledge", headers=op)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    other = await login(c, "op-cm1-b")
    r = await c.post(f"/api/v1/calls/{cid}/acknowledge", headers=other)
    assert r.status_code == 409 and r.json()["detail"]["by"] == "user:op-cm1"

    clock.advance(20)
    r = await c.post(f"/api/v1/calls/{cid}/dispatch", headers=op, json={"staff_ids": ["cm1-r1"]})
    assert r.status_code == 200 and r.json()["status"] == "dispatched"
    for action in ("en-route", "arrive"):
        clock.advance(100)
        assert (await c.post(f"/api/v1/calls/{cid}/{action}", headers=op)).status_code == 200
    r = await c.post(f"/api/v1/calls/{cid}/note", headers=op, json={"text": "到达，老人意识清醒"})
    assert r.status_code == 200
    r = await c.post(f"/api/v1/calls/{cid}/resolve", headers=op, json={"outcome": "bogus"})
    assert r.status_code == 422
    r = await c.post(f"/api/v1/calls/{cid}/resolve", headers=op, json={"outcome": "taken_to_hospital"})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "resolved" and body["outcome"] == "taken_to_hospital"
    kinds = [row["kind"] for row in body["timeline"]]
    for k in (
        "event_received",
        "call_opened",
        "assigned",
        "acknowledged",
        "responder_dispatched",
        "en_route",
        "on_scene",
        "note",
        "resolved",
    ):
        assert k in kinds, k
    assert {"at", "kind", "actor", "station_id", "detail"} <= set(body["timeline"][0])
    opened = datetime.fromisoformat(body["opened_at"])
    acked = datetime.fromisoformat(body["acknowledged_at"])
    assert acked - opened == timedelta(seconds=12)
    assert (await c.get("/api/v1/calls?status=closed", headers=op)).json()[0]["id"] == cid
    assert (await c.get("/api/v1/calls?status=open", headers=op)).json() == []


async def test_scope_is_enforced(world: dict[str, Any], maker: async_sessionmaker[AsyncSession]) -> None:
    c: httpx.AsyncClient = world["client"]
    d: Dispatcher = world["dispatcher"]
    await store_event(maker, "h1-btn", "e1", "fall", T0)
    await d.intake_once()
    own = await login(c, "op-cm1")
    cid = (await c.get("/api/v1/calls", headers=own)).json()[0]["id"]

    stranger = await login(c, "op-cm2")
    assert (await c.get("/api/v1/calls", headers=stranger)).json() == []
    assert (await c.get(f"/api/v1/calls/{cid}", headers=stranger)).status_code == 404
    assert (await c.post(f"/api/v1/calls/{cid}/acknowledge", headers=stranger)).status_code == 404

    sup = await login(c, "sup-st1")
    assert (await c.get(f"/api/v1/calls/{cid}", headers=sup)).status_code == 200
    assert (await c.post(f"/api/v1/calls/{cid}/acknowledge", headers=sup)).status_code == 403

    county = await login(c, "op-county")
    assert (await c.get(f"/api/v1/calls/{cid}", headers=county)).status_code == 200
    # an operator cannot send another station's staff
    r = await c.post(f"/api/v1/calls/{cid}/dispatch", headers=own, json={"staff_ids": ["cm2-r1"]})
    assert r.status_code == 404
    assert (await c.get("/api/v1/calls")).status_code == 401
    assert (await c.get("/api/v1/calls", headers={"Authorization": "Bearer forged.token"})).status_code == 401

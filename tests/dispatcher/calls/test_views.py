"""The call lifecycle through the HTTP API with real tokens, and scope enforced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.engine.process import Dispatcher
from tests.conftest import add_small_registry
from tests.support.api import api_world
from tests.support.api import bearer as login
from tests.support.clock import ManualClock
from tests.support.events import store_event
from tests.support.registry import add_logins, add_second_street, staff_row

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def world(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await add_second_street(s)
        s.add_all([staff_row("cm1-r1"), staff_row("cm2-r1")])
        await add_logins(
            s,
            [
                ("op-cm1", "operator", "cm1"),
                ("op-cm1-b", "operator", "cm1"),
                ("op-cm2", "operator", "cm2"),
                ("sup-st1", "supervisor", "st1"),
                ("op-county", "operator", "county"),
            ],
            now=T0,
        )
    async with api_world(maker, T0) as w:
        yield {"client": w.client, "dispatcher": w.dispatcher, "clock": w.clock}


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

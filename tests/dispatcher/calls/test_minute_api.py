"""The operator's decisive minute through the HTTP API: ringing the resident back, who to
send, the hand-off facts, and an escalated call staying with the home's own station."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.auth.models import User
from dispatcher.auth.principals import load_principal
from dispatcher.console import queries as console_queries
from dispatcher.engine.process import Dispatcher
from dispatcher.registry.models import Home, Resident
from tests.conftest import add_small_registry
from tests.support.api import api_world
from tests.support.api import bearer as login
from tests.support.events import store_event
from tests.support.registry import add_logins, add_second_street, staff_row

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
HOME_LINE = "0710-5550123"
MOBILE = "13912345678"

pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def world(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        await add_second_street(s)
        s.add_all([staff_row("cm1-r1"), staff_row("cm1-r2"), staff_row("st1-r1"), staff_row("cm2-r1")])
        await s.execute(update(Home).where(Home.id == "h1").values(phone=HOME_LINE, notes="菜市场对面"))
        await s.execute(
            update(Resident)
            .where(Resident.id == "r1")
            .values(
                phone=MOBILE,
                medications="硝苯地平 10mg 每日两次",
                allergies="青霉素",
                access_notes="钥匙在邻居302",
            )
        )
        await add_logins(
            s,
            [
                ("op-cm1", "operator", "cm1"),
                ("op-cm2", "operator", "cm2"),
                ("sup-st1", "supervisor", "st1"),
                ("op-county", "operator", "county"),
            ],
            now=T0,
        )
    async with api_world(maker, T0) as w:
        yield {"client": w.client, "dispatcher": w.dispatcher}


async def open_call(world: dict[str, Any], maker: async_sessionmaker[AsyncSession]) -> int:
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    d: Dispatcher = world["dispatcher"]
    await d.intake_once()
    async with maker() as s:
        return int(await s.scalar(select(AuditRow.call_id).where(AuditRow.kind == "call_opened")) or 0)


async def test_calling_back_lands_on_the_timeline_naming_the_operator(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    c: httpx.AsyncClient = world["client"]
    call_id = await open_call(world, maker)
    op = await login(c, "op-cm1")
    r = await c.post(
        f"/api/v1/calls/{call_id}/callback", json={"outcome": "no_answer", "to": "home"}, headers=op
    )
    assert r.status_code == 200, r.text
    r = await c.post(
        f"/api/v1/calls/{call_id}/callback", json={"outcome": "talked", "to": "mobile"}, headers=op
    )
    rows = [row for row in r.json()["timeline"] if row["kind"] == "called_back"]
    assert [(row["actor"], row["detail"]["outcome"], row["detail"]["line"]) for row in rows] == [
        ("user:op-cm1", "no_answer", "home"),
        ("user:op-cm1", "talked", "mobile"),
    ]
    assert r.json()["status"] == "assigned"  # ringing back is not an acknowledgement
    # the record names the line, never the number; neither do the logs
    assert MOBILE not in r.text and HOME_LINE not in r.text
    assert MOBILE not in caplog.text and HOME_LINE not in caplog.text
    for body in ({"outcome": "maybe", "to": "home"}, {"outcome": "talked", "to": "neighbour"}, {}):
        bad = await c.post(f"/api/v1/calls/{call_id}/callback", json=body, headers=op)
        assert bad.status_code == 422, body
    sup = await login(c, "sup-st1")
    assert (await c.post(f"/api/v1/calls/{call_id}/callback", json=body, headers=sup)).status_code == 403
    await c.post(f"/api/v1/calls/{call_id}/cancel", json={"outcome": "false_alarm"}, headers=op)
    closed = await c.post(
        f"/api/v1/calls/{call_id}/callback", json={"outcome": "talked", "to": "home"}, headers=op
    )
    assert closed.status_code == 409


async def test_phones_and_hand_off_facts_only_for_roles_that_handle_calls(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    call_id = await open_call(world, maker)
    ctx = (await c.get(f"/api/v1/console/calls/{call_id}/context", headers=await login(c, "op-cm1"))).json()
    assert ctx["home_phone"] == HOME_LINE and ctx["home_notes"] == "菜市场对面"
    res = ctx["resident"]
    assert (res["phone"], res["medications"], res["allergies"], res["access_notes"]) == (
        MOBILE,
        "硝苯地平 10mg 每日两次",
        "青霉素",
        "钥匙在邻居302",
    )
    assert (ctx["map"]["home"]["lat"], ctx["map"]["home"]["lon"]) == (32.692, 112.852)
    sup = (await c.get(f"/api/v1/console/calls/{call_id}/context", headers=await login(c, "sup-st1"))).json()
    assert sup["home_phone"] == ""
    assert {k: sup["resident"][k] for k in ("phone", "medications", "allergies", "access_notes")} == {
        "phone": "",
        "medications": "",
        "allergies": "",
        "access_notes": "",
    }


async def test_who_to_send_nearest_free_first_off_duty_last(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    call_id = await open_call(world, maker)
    op = await login(c, "op-cm1")
    rows = (await c.get(f"/api/v1/console/calls/{call_id}/candidates", headers=op)).json()
    # the call is at cm1: its two people (the nurse is off duty)
    assert [(r["staff_id"], r["state"]) for r in rows] == [("cm1-r1", "free"), ("cm1-r2", "off_duty")]
    assert rows[0]["reasons"] == ["FREE", "OWN_STATION", "WITHIN_LIMIT", "NEAREST"]
    assert 100 < rows[0]["distance_m"] < 200 and 0 < rows[0]["eta_s"] < 60
    # escalated to the street, the street centre's responder joins, after the home's own
    await c.post(f"/api/v1/calls/{call_id}/escalate", json={"to": "street"}, headers=op)
    county = await login(c, "op-county")
    rows = (await c.get(f"/api/v1/console/calls/{call_id}/candidates", headers=county)).json()
    assert [(r["staff_id"], r["state"]) for r in rows] == [
        ("cm1-r1", "free"),
        ("st1-r1", "free"),
        ("cm1-r2", "off_duty"),
    ]
    assert rows[1]["reasons"] == ["FREE", "WITHIN_LIMIT"]
    await c.post(f"/api/v1/calls/{call_id}/dispatch", json={"staff_ids": ["cm1-r1"]}, headers=county)
    rows = (await c.get(f"/api/v1/console/calls/{call_id}/candidates", headers=county)).json()
    assert [(r["staff_id"], r["state"], r["reasons"][0]) for r in rows] == [
        ("st1-r1", "free", "FREE"),
        ("cm1-r1", "busy", "ON_THIS_CALL"),
        ("cm1-r2", "off_duty", "OFF_DUTY"),
    ]
    # outside the caller's scope the call does not exist
    other = await login(c, "op-cm2")
    assert (await c.get(f"/api/v1/console/calls/{call_id}/candidates", headers=other)).status_code == 404


async def test_a_home_that_cannot_be_ranked_is_a_conflict_not_a_bad_request(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    """Bad registry data (an area the routing does not know) is the server's record, not
    the caller's request: 409 with the reason, never 422 (whose body is FastAPI's list)."""
    c: httpx.AsyncClient = world["client"]
    call_id = await open_call(world, maker)
    async with maker() as s, s.begin():
        await s.execute(update(Home).where(Home.id == "h1").values(area="mountain"))
    op = await login(c, "op-cm1")
    r = await c.get(f"/api/v1/console/calls/{call_id}/candidates", headers=op)
    assert r.status_code == 409
    assert "mountain" in r.json()["detail"]


async def test_an_escalated_call_stays_with_the_homes_own_station(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    call_id = await open_call(world, maker)
    op, other = await login(c, "op-cm1"), await login(c, "op-cm2")
    for level in ("street", "county"):
        r = await c.post(f"/api/v1/calls/{call_id}/escalate", json={"to": level}, headers=op)
        assert r.status_code == 200, r.text
        assert r.json()["station_id"] == ("st1" if level == "street" else "county")
        # the home's own station still lists it, opens it, and its live stream keeps it
        assert [x["id"] for x in (await c.get("/api/v1/calls", headers=op)).json()] == [call_id]
        assert (await c.get(f"/api/v1/calls/{call_id}", headers=op)).status_code == 200
        assert (await c.get(f"/api/v1/console/calls/{call_id}/context", headers=op)).status_code == 200
        async with maker() as s:
            who = await load_principal(s, user_id=await _user_id(s, "op-cm1"))
            assert who is not None
            assert await console_queries.open_call_ids(s, who=who) == [call_id]
            assert await console_queries.scoped_ids(s, who=who, ids={call_id}) == ([call_id], [])
        # another street's station never sees it
        assert (await c.get("/api/v1/calls", headers=other)).json() == []
        assert (await c.get(f"/api/v1/calls/{call_id}", headers=other)).status_code == 404
    # and may act on it: answer, send its own responder
    r = await c.post(f"/api/v1/calls/{call_id}/acknowledge", headers=op)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    r = await c.post(f"/api/v1/calls/{call_id}/dispatch", json={"staff_ids": ["cm1-r1"]}, headers=op)
    assert r.status_code == 200 and r.json()["status"] == "dispatched"
    assert (
        await c.post(f"/api/v1/calls/{call_id}/note", json={"text": "x"}, headers=other)
    ).status_code == 404


async def _user_id(s: AsyncSession, username: str) -> int:
    return int(await s.scalar(select(User.id).where(User.username == username)) or 0)

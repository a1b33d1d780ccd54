"""Set-aside events and timers over HTTP: listed within the caller's scope with the error;
an admin puts one back in the queue, audited."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.auth.users import create_user
from dispatcher.calls import intake, timers
from dispatcher.calls.context import Outcome
from dispatcher.calls.models import Call, EventIntake, IntakeFailure, Timer
from dispatcher.engine.process import Dispatcher
from dispatcher.registry.models import Home
from tests.dispatcher.calls.test_views import T0, login
from tests.dispatcher.calls.test_views import world as calls_world  # noqa: F401  (the `world` fixture)
from tests.support.clock import ManualClock
from tests.support.events import store_event


@pytest.fixture
async def world_admin(
    calls_world: dict[str, Any],  # noqa: F811  (the fixture imported above)
    maker: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    async with maker() as s, s.begin():
        await create_user(
            s,
            username="root",
            password="password-123",
            role="admin",
            station_id=None,
            display_name="",
            now=T0,
        )
        # a device in the other street's home: its failures belong to op-cm2, not op-cm1
        from device_gateway.models import Device

        s.add(Device(id="h2-btn", home_id="h2", kind="button", heartbeat_s=60, enabled=True, created_at=T0))
    real = intake.handle_event

    async def handle_event(session: AsyncSession, ev: Any, *a: Any, **kw: Any) -> Outcome:
        if ev.event_id.startswith("bad"):
            raise ValueError(f"cannot handle {ev.event_id}")
        return await real(session, *a, ev=ev, **kw)

    monkeypatch.setattr(intake, "handle_event", handle_event)
    calls_world["unpoison"] = lambda: monkeypatch.setattr(intake, "handle_event", real)
    return calls_world


async def set_aside(d: Dispatcher, clock: ManualClock) -> None:
    for _ in range(4):
        while await d.intake_once():
            pass
        clock.advance(10)


async def test_operators_see_their_subtree_admins_all_and_an_admin_retries(
    world_admin: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world_admin["client"]
    d: Dispatcher = world_admin["dispatcher"]
    clock: ManualClock = world_admin["clock"]
    await store_event(maker, "h1-btn", "bad-1", "sos", T0)
    async with maker() as s, s.begin():  # the second home's device (store_event writes home h1)
        from device_gateway.store import EventRow, insert_events

        await insert_events(
            s,
            [
                EventRow(
                    device_id="h2-btn",
                    event_id="bad-2",
                    home_id="h2",
                    type="sos",
                    event_class="emergency",
                    sensor=None,
                    data={},
                    source="device",
                    device_ts=T0,
                    received_at=T0,
                    clock_skew_s=0.0,
                    clock_suspect=False,
                    gateway="test",
                )
            ],
        )
    await store_event(maker, "h1-btn", "good", "sos", T0)
    await set_aside(d, clock)

    assert (await c.get("/api/v1/intake/failures")).status_code == 401
    root = await login(c, "root")
    body = (await c.get("/api/v1/intake/failures", headers=root)).json()
    assert body["timers"] == []
    by_device = {e["device_id"]: e for e in body["events"]}
    assert set(by_device) == {"h1-btn", "h2-btn"}
    e1 = by_device["h1-btn"]
    assert e1["home_id"] == "h1" and e1["type"] == "sos" and e1["attempts"] == 3
    assert e1["error"] == "ValueError: cannot handle bad-1" and e1["set_aside_at"] and e1["stored_at"]
    assert e1["station_id"] == "cm1" and e1["event_id"] == "bad-1"

    op1 = await login(c, "op-cm1")
    assert [
        e["device_id"] for e in (await c.get("/api/v1/intake/failures", headers=op1)).json()["events"]
    ] == ["h1-btn"]
    op2 = await login(c, "op-cm2")
    assert [
        e["device_id"] for e in (await c.get("/api/v1/intake/failures", headers=op2)).json()["events"]
    ] == ["h2-btn"]

    # only admins put an event back
    pk = e1["event_pk"]
    assert (await c.post(f"/api/v1/intake/failures/{pk}/retry", headers=op1)).status_code == 403
    assert (await c.post("/api/v1/intake/failures/999999/retry", headers=root)).status_code == 404
    assert (await c.post(f"/api/v1/intake/failures/{2**70}/retry", headers=root)).status_code == 422
    world_admin["unpoison"]()  # the cause is fixed
    r = await c.post(f"/api/v1/intake/failures/{pk}/retry", headers=root)
    assert r.status_code == 200 and r.json() == {"kind": "event", "ref": pk, "requeued": True}
    assert (await c.post(f"/api/v1/intake/failures/{pk}/retry", headers=root)).status_code == 404
    async with maker() as s:
        assert await s.get(EventIntake, pk) is None, "back in the queue"
        assert await s.get(IntakeFailure, ("event", pk)) is None, "its count starts again"
        notes = (await s.scalars(select(AuditRow).where(AuditRow.kind == "note"))).all()
    (requeued,) = [n for n in notes if n.detail.get("requeued") == "event"]
    assert (
        requeued.actor == "user:root" and requeued.detail["event_pk"] == pk and requeued.station_id == "cm1"
    )
    while await d.intake_once():
        pass
    async with maker() as s:
        intake = await s.get(EventIntake, pk)
    assert intake is not None and intake.decision in ("opened", "joined")
    after = (await c.get("/api/v1/intake/failures", headers=root)).json()
    assert [e["device_id"] for e in after["events"]] == ["h2-btn"]


async def test_set_aside_timers_are_listed_and_put_back(
    world_admin: dict[str, Any], maker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    c: httpx.AsyncClient = world_admin["client"]
    d: Dispatcher = world_admin["dispatcher"]
    clock: ManualClock = world_admin["clock"]
    real = timers.fire_timer

    async def fire_timer(session: AsyncSession, timer: Timer, **kw: Any) -> Outcome:
        if timer.action == "remind":
            raise RuntimeError("no route to the station's console")
        return await real(session, timer=timer, **kw)

    monkeypatch.setattr(timers, "fire_timer", fire_timer)
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()  # the opening alert fired with the call; the reminder is due at 20 s
    for _ in range(5):  # the reminder fails at 20, 30 and 40 s (before the street's 60 s)
        while await d.timers_once():
            pass
        clock.advance(10)
    root = await login(c, "root")
    op2 = await login(c, "op-cm2")
    [t] = (await c.get("/api/v1/intake/failures", headers=root)).json()["timers"]
    assert t["action"] == "remind" and t["attempts"] == 3 and t["station_id"] == "cm1"
    assert t["error"] == "RuntimeError: no route to the station's console"
    assert (await c.get("/api/v1/intake/failures", headers=op2)).json()["timers"] == []
    monkeypatch.setattr(timers, "fire_timer", real)
    r = await c.post(f"/api/v1/intake/failures/timers/{t['timer_id']}/retry", headers=root)
    assert r.status_code == 200
    while await d.timers_once():
        pass
    async with maker() as s:
        timer = await s.get(Timer, t["timer_id"])
        call = await s.get(Call, t["call_id"])
        station = await s.scalar(select(Home.station_id).where(Home.id == "h1"))
    assert timer is not None and timer.status == "fired"
    assert call is not None and call.station_id == station
    assert (await c.get("/api/v1/intake/failures", headers=root)).json()["timers"] == []

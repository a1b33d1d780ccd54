"""The cost guard's alert reaches the supervisors of the call's area (issue 12), once per
hour for the hourly cap whichever of two dispatcher copies hits it, on the local fake
vendors (SQLite and, with --db postgresql, PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.auth.models import User
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.models import Notification
from tests.dispatcher.engine.support import T0
from tests.dispatcher.notifications.channels.fakes import FakeVendors
from tests.dispatcher.notifications.channels.test_reach_wiring import BUDGET_POLICY, _staff, copies
from tests.support.clock import ManualClock
from tests.support.events import store_event

__all__ = ["copies"]  # two dispatcher copies on one database, sharing the cost budget

Maker = async_sessionmaker[AsyncSession]


async def _supervisors(maker: Maker, users: dict[str, str]) -> None:
    async with maker() as s, s.begin():
        s.add_all(
            User(username=u, password_hash="x", role="supervisor", station_id=st, created_at=T0)
            for u, st in users.items()
        )


async def _run(a: Dispatcher, b: Dispatcher, maker: Maker) -> None:
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    while await a.intake_once():
        pass
    while await a.timers_once():
        pass
    rounds = 0
    while await (a, b)[rounds % 2].outbox_once(limit=1):  # the copies take turns
        rounds += 1
        assert rounds < 50


@pytest.mark.parametrize("copies", [(BUDGET_POLICY, 2)], indirect=True)
async def test_the_cost_alert_goes_to_the_areas_supervisors_once(
    copies: tuple[Dispatcher, Dispatcher, ManualClock], maker: Maker, vendors: FakeVendors
) -> None:
    a, b, _ = copies
    await _staff(maker, {"p-voice": "sms", "p-route": "sms", "p-app": "sms", "p-4": "sms"})
    await _supervisors(maker, {"sup-cm1": "cm1", "sup-st1": "st1", "sup-cty": "county", "sup-st2": "county"})
    await _run(a, b, maker)
    assert len(vendors.of("aliyun", "SendSms")) == 2
    async with maker() as s:
        alerts = list(await s.scalars(select(Notification).where(Notification.purpose == "cost_guard")))
        hits = list(await s.scalars(select(AuditRow).where(AuditRow.kind == "cost_guard_hit")))
        blocked = [
            r
            for r in await s.scalars(select(AuditRow).where(AuditRow.kind == "notification_failed"))
            if r.detail.get("status") == "blocked_by_cost_guard"
        ]
    assert {r.actor for r in blocked} == {"dispatcher-a", "dispatcher-b"}
    assert len(hits) == 1, "both copies were blocked; the alert is raised once for the hour"
    # the station's and the street's supervisors; the street has one, so not the county's
    assert sorted(n.target for n in alerts) == ["user:sup-cm1", "user:sup-st1"]
    assert all(n.status == "sent" for n in alerts), "delivered by the outbox like any notification"
    body = alerts[0].body
    assert body["kind"] == "sms" and body["scope"] == "hour" and body["limit"] == 2 and body["used"] == 2
    assert "短信 2/2" in body["note"]
    assert (await verify_log(maker)).ok


@pytest.mark.parametrize("copies", [(BUDGET_POLICY, 2)], indirect=True)
async def test_no_supervisor_the_cost_alert_is_recorded_and_goes_to_the_county_centre(
    copies: tuple[Dispatcher, Dispatcher, ManualClock], maker: Maker, vendors: FakeVendors
) -> None:
    a, b, _ = copies
    await _staff(maker, {"p-voice": "sms", "p-route": "sms", "p-app": "sms"})
    await _run(a, b, maker)
    async with maker() as s:
        alerts = list(await s.scalars(select(Notification).where(Notification.purpose == "cost_guard")))
        gaps = [
            r
            for r in await s.scalars(select(AuditRow).where(AuditRow.kind == "notification_failed"))
            if r.detail.get("error_code") == "no_supervisor"
        ]
    assert [n.target for n in alerts] == ["station:county"]
    (gap,) = gaps
    assert gap.detail["purpose"] == "cost_guard" and gap.detail["fallback"] == ["station:county"]

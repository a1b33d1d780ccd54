"""A missed visit is not only an audit row: level 1 pages the visit station's manager,
level 2 the street centre's people, through the outbox (rows written with the
escalation, delivered and retried by the dispatcher), once across copies, and never as
a call."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from config.settings import load_settings
from dispatcher.audit.models import AuditRow
from dispatcher.auth.models import User
from dispatcher.calls.models import Call, Timer
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.models import Notification
from dispatcher.registry.models import Staff
from dispatcher.visits import generation
from dispatcher.visits.config_file import load_visit_rules
from dispatcher.visits.models import Visit
from tests.dispatcher.visits.conftest import add_visit_county
from tests.support.clock import ManualClock
from tests.support.services import FailingFirst

Maker = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)  # Sunday 11:00 in Shanghai, ISO week 49
DUE = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)  # r1's week 49 visit
RULES = load_visit_rules()


async def county(maker: Maker) -> None:
    await add_visit_county(maker)
    async with maker() as s, s.begin():
        s.add(User(username="sup-st1", password_hash="x", role="supervisor", station_id="st1", created_at=T0))


async def run_round(maker: Maker, now: datetime) -> int:
    async with maker() as s, s.begin():
        await generation.sync_plans(s, rules=RULES, now=now)
        await generation.generate_visits(s, rules=RULES, now=now)
        await generation.refresh_statuses(s, rules=RULES, now=now)
    async with maker() as s, s.begin():
        return await generation.escalate_missed(s, rules=RULES, now=now, actor="test:visits", channel="log")


async def pages(maker: Maker) -> list[Notification]:
    async with maker() as s:
        return list((await s.scalars(select(Notification).order_by(Notification.id))).all())


async def r1_w49(maker: Maker) -> Visit:
    async with maker() as s:
        return (await s.scalars(select(Visit).where(Visit.period == "2026-W49"))).one()


async def test_the_manager_then_the_street_are_paged_once_with_the_escalation(maker: Maker) -> None:
    await county(maker)
    await run_round(maker, T0)
    await run_round(maker, DUE + timedelta(hours=25))
    assert await pages(maker) == [], "missed, not yet escalated: nobody paged"
    await asyncio.gather(*(run_round(maker, DUE + timedelta(hours=48)) for _ in range(3)))
    visit = await r1_w49(maker)
    [first] = await pages(maker)
    assert (first.purpose, first.target, first.visit_id, first.order_id, first.call_id) == (
        "visit_missed",
        "staff:cm1-m1",  # cm1's manager, not the on-duty responder
        visit.id,
        None,
        None,
    )
    assert first.body["level"] == 1 and first.body["station_id"] == "cm1" and first.status == "pending"
    await asyncio.gather(*(run_round(maker, DUE + timedelta(hours=121)) for _ in range(3)))
    notes = await pages(maker)
    assert [(n.target, n.body["level"], n.body["to"]) for n in notes] == [
        ("staff:cm1-m1", 1, "station_manager"),
        ("user:sup-st1", 2, "street"),  # the street centre's supervisor
    ]
    async with maker() as s:
        rows = (
            await s.scalars(select(AuditRow).where(AuditRow.kind == "visit_escalated").order_by(AuditRow.seq))
        ).all()
        calls = await s.scalar(select(func.count()).select_from(Call))
        timers = await s.scalar(select(func.count()).select_from(Timer))
    assert [(r.detail["level"], r.detail["paged"]) for r in rows] == [
        (1, ["staff:cm1-m1"]),
        (2, ["user:sup-st1"]),
    ]
    assert calls == 0 and timers == 0


async def test_a_station_without_a_manager_pages_its_on_duty_staff(maker: Maker) -> None:
    await county(maker)
    async with maker() as s, s.begin():
        row = await s.get(Staff, "cm1-m1")
        assert row is not None
        row.role = "nurse"
        row.on_duty = False
    await run_round(maker, T0)
    await run_round(maker, DUE + timedelta(hours=48))
    assert [n.target for n in await pages(maker)] == ["staff:cm1-n1", "staff:cm1-r1"]


async def test_the_dispatcher_delivers_the_page_and_retries_a_failing_channel(maker: Maker) -> None:
    await county(maker)
    clock = ManualClock(T0)
    flaky = FailingFirst(failures=1)
    d = Dispatcher(
        settings=load_settings(database_url="sqlite:///unused.db"),
        maker=maker,
        bus=MemoryBus(),
        clock=clock,
        mqtt=None,
        notifier=flaky,
    )
    d.visit_rules = RULES
    await d.visits_once()
    clock.advance((DUE + timedelta(hours=48) - T0).total_seconds())
    await d.visits_once()
    await d.visits_once()  # the late → missed move and the escalation: one level, once
    for _ in range(10):
        while await d.outbox_once():
            pass
        clock.advance(1)
    [note] = await pages(maker)
    assert (note.status, note.attempts) == ("sent", 2)
    assert [(m.purpose, m.call_id, m.target) for m in flaky.sent] == [("visit_missed", None, "staff:cm1-m1")]
    async with maker() as s:
        kinds = (
            await s.scalars(
                select(AuditRow.kind)
                .where(AuditRow.kind.in_(["notification_failed", "notification_sent"]))
                .order_by(AuditRow.seq)
            )
        ).all()
        rows = (await s.scalars(select(AuditRow).where(AuditRow.kind == "notification_sent"))).all()
    assert list(kinds) == ["notification_failed", "notification_sent"]
    assert [(r.call_id, r.detail["visit_id"], r.station_id) for r in rows] == [(None, note.visit_id, "cm1")]

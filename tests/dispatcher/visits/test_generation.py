"""Generating visits in the database: plans from the registry and calls, due visits
assigned to the home's station (and a rostered person), idempotent in several copies,
late → missed, and missed visits escalating to the station manager then the street."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit import service as audit
from dispatcher.audit.models import AuditRow
from dispatcher.calls.models import Call
from dispatcher.registry.models import Resident
from dispatcher.visits import generation
from dispatcher.visits.config_file import load_visit_rules
from dispatcher.visits.models import Visit, VisitPlan
from tests.dispatcher.visits.conftest import add_visit_county

Maker = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)  # Sunday 11:00 in Shanghai, ISO week 49
RULES = load_visit_rules()


async def run_round(maker: Maker, now: datetime) -> tuple[int, int]:
    async with maker() as s, s.begin():
        plans = await generation.sync_plans(s, rules=RULES, now=now)
        made = await generation.generate_visits(s, rules=RULES, now=now)
        await generation.refresh_statuses(s, rules=RULES, now=now)
    async with maker() as s, s.begin():
        await generation.escalate_missed(s, rules=RULES, now=now, actor="test:visits")
    return plans, made


async def visits(maker: Maker) -> list[Visit]:
    async with maker() as s:
        return list((await s.scalars(select(Visit).order_by(Visit.id))).all())


async def test_plans_become_visits_at_the_home_station_and_a_rostered_person(maker: Maker) -> None:
    await add_visit_county(maker)
    plans, made = await run_round(maker, T0)
    assert plans == 3 and made == 2
    async with maker() as s:
        keys = set((await s.scalars(select(VisitPlan.key))).all())
    assert keys == {"r1:living_alone", "r1:risk:high_need_alone", "r2:empty_nest"}
    r1, r2 = sorted(await visits(maker), key=lambda v: v.resident_id)
    # r1's weekly visit covers the month; the responder on the roster is named
    assert (r1.period, r1.station_id, r1.staff_id, r1.status) == ("2026-W49", "cm1", "cm1-r1", "due")
    assert r1.due_at == datetime(2026, 12, 6, 16, 0, tzinfo=UTC)  # Monday 00:00 local
    # nobody rostered at cm2: the station's to give out
    assert (r2.period, r2.station_id, r2.staff_id) == ("2026-12", "cm2", None)
    assert r2.window_start == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)


async def test_rounds_and_copies_never_double_a_visit(maker: Maker) -> None:
    await add_visit_county(maker)
    await run_round(maker, T0)
    assert await run_round(maker, T0 + timedelta(minutes=1)) == (0, 0)

    async def copy(now: datetime) -> int:
        async with maker() as s, s.begin():
            return await generation.generate_visits(s, rules=RULES, now=now)

    next_week = T0 + timedelta(days=1)  # Monday local: week 50
    made = await asyncio.gather(copy(next_week), copy(next_week), copy(next_week))
    assert sum(made) == 1
    periods = [(v.resident_id, v.period) for v in await visits(maker)]
    assert len(periods) == len(set(periods)) == 3 and ("r1", "2026-W50") in periods


async def test_a_visit_done_this_month_is_not_generated_again_and_plans_follow_the_registry(
    maker: Maker,
) -> None:
    await add_visit_county(maker)
    await run_round(maker, T0)
    async with maker() as s, s.begin():
        r1 = await s.get(Resident, "r1")
        assert r1 is not None
        r1.capacity_level = 1  # no longer high-need: the weekly plan ends, the monthly takes over
    await run_round(maker, T0 + timedelta(minutes=5))
    async with maker() as s:
        active = dict((await s.execute(select(VisitPlan.key, VisitPlan.active))).all())
    assert active["r1:risk:high_need_alone"] is False and active["r1:living_alone"] is True
    assert ("r1", "2026-12") in [(v.resident_id, v.period) for v in await visits(maker)]


async def test_a_closed_emergency_call_gets_a_follow_up_within_24_hours(maker: Maker) -> None:
    await add_visit_county(maker)
    closed = T0 - timedelta(hours=2)
    async with maker() as s, s.begin():
        call = Call(
            status="resolved",
            priority="P1",
            event_class="emergency",
            home_id="h1",
            resident_id="r1",
            station_id="cm1",
            lat=32.692,
            lon=112.852,
            last_event_at=closed,
        )
        s.add(call)
        await s.flush()
        await audit.append(s, kind="resolved", at=closed, actor="op", call_id=call.id, station_id="cm1")
        call_id = call.id
    await run_round(maker, T0)
    [follow] = [v for v in await visits(maker) if v.period.startswith("call-")]
    assert follow.period == f"call-{call_id}" and follow.resident_id == "r1"
    assert follow.window_start == closed and follow.due_at == closed + timedelta(hours=24)
    assert await run_round(maker, T0 + timedelta(hours=1)) == (0, 0)


async def test_late_then_missed_then_the_manager_then_the_street_each_once(maker: Maker) -> None:
    await add_visit_county(maker)
    await run_round(maker, T0)
    due = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)  # r1's week 49 visit

    async def r1_w49() -> Visit:
        [v] = [v for v in await visits(maker) if v.period == "2026-W49"]
        return v

    async def escalations() -> list[tuple[str | None, int, str]]:
        async with maker() as s:
            rows = (
                await s.scalars(
                    select(AuditRow).where(AuditRow.kind == "visit_escalated").order_by(AuditRow.seq)
                )
            ).all()
        return [(r.station_id, r.detail["level"], r.detail["to"]) for r in rows]

    await run_round(maker, due + timedelta(hours=1))
    assert (await r1_w49()).status == "late"
    await run_round(maker, due + timedelta(hours=25))
    assert (await r1_w49()).status == "missed" and await escalations() == []
    await run_round(maker, due + timedelta(hours=48))
    assert await escalations() == [("cm1", 1, "station_manager")]
    await asyncio.gather(*(run_round(maker, due + timedelta(hours=60)) for _ in range(2)))
    assert len(await escalations()) == 1
    await run_round(maker, due + timedelta(hours=121))
    assert await escalations() == [("cm1", 1, "station_manager"), ("st1", 2, "street")]
    await run_round(maker, due + timedelta(hours=200))
    assert len(await escalations()) == 2 and (await r1_w49()).escalation_level == 2
    assert (await audit.verify_log(maker)).ok


async def test_a_generator_that_was_down_records_every_level_it_skipped(maker: Maker) -> None:
    await add_visit_county(maker)
    await run_round(maker, T0)
    due = datetime(2026, 12, 6, 16, 0, tzinfo=UTC)
    await run_round(maker, due + timedelta(hours=130))
    async with maker() as s:
        rows = (
            await s.scalars(select(AuditRow).where(AuditRow.kind == "visit_escalated").order_by(AuditRow.seq))
        ).all()
    assert [(r.detail["level"], r.detail["to"], r.station_id) for r in rows] == [
        (1, "station_manager", "cm1"),
        (2, "street", "st1"),
    ]
    assert all(r.detail["visit_station_id"] == "cm1" and r.actor == "test:visits" for r in rows)

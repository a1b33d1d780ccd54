"""The demo's service orders and welfare visits: the demo county's providers and groups,
the simulated providers' and visitors' plans (pure), and two days of them worked on one street of the
demo county through the service functions, on hand-moved time, counted by the oversight
figures from the audit log."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.demo import ensure_demo_services
from carecall.shell.sim_operators import SimulatedOperators
from carecall.shell.sim_services import SimulatedServices
from carecall.shell.sim_services_plan import (
    OrderFacts,
    ServiceBehaviour,
    VisitFacts,
    plan_bookings,
    plan_order,
    plan_visit,
)
from config.settings import load_settings
from device_gateway.models import Device, DeviceEvent
from device_gateway.protocol.messages import SERVICE_KINDS
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.engine.process import load_context
from dispatcher.orders import breaches
from dispatcher.orders.catalogue_file import load_catalogue
from dispatcher.orders.demo_providers import StationPoint, demo_providers
from dispatcher.orders.device_intake import order_from_event
from dispatcher.orders.models import Order, Provider
from dispatcher.oversight.services_reports import orders_data, visits_data
from dispatcher.registry.demo_county import generate_demo_county
from dispatcher.registry.demo_load import load_demo_county
from dispatcher.visits import generation
from dispatcher.visits.config_file import load_visit_rules
from dispatcher.visits.demo_categories import ResidentPoint, demo_categories
from dispatcher.visits.models import ResidentCategory, Visit
from simulators.body import SERVICE_KIND_WEIGHTS
from tests.support.clock import ManualClock
from tests.support.events import store_event

LEVELS = {"accept_within_s": 900, "start_by_s": 5400, "start_grace_s": 900, "done_within_s": 3600}
T0 = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # local 08:00 on the last day of November
TZ = ZoneInfo("Asia/Shanghai")


# --------------------------------------------------------------------------- seeding (pure)


def test_the_demo_county_gets_its_providers_and_every_kind_is_offered() -> None:
    county = generate_demo_county()
    points = [StationPoint(s.id, s.lat, s.lon, s.parent_id) for s in county.stations]
    providers = demo_providers(points)
    assert len(providers) == 7
    assert demo_providers(points) == providers  # no random draw
    offered = {k for p in providers.values() for k in p.kinds}
    assert {"meal", "cleaning", "medical", "bathing", "repair"} <= offered
    rural = providers["p-guotan-xingfu"]
    assert rural.stations and all(s.startswith("guotan-") for s in rural.stations)
    assert all(p.manager_name and p.manager_phone and p.capacity >= 1 for p in providers.values())
    assert demo_providers([StationPoint("elsewhere", 30.0, 110.0, None)]) == {}


def test_the_demo_residents_get_special_difficulty_groups() -> None:
    county = generate_demo_county()
    area = {h.id: h.area for h in county.homes}
    people = [
        ResidentPoint(r.id, r.home_id, r.capacity_level, r.living_alone, area[r.home_id] == "rural")
        for r in county.residents
    ]
    pairs = demo_categories(people)
    assert pairs == demo_categories(people)
    groups = Counter(c.value for _, c in pairs)
    assert set(groups) == {"disabled", "severely_handicapped", "empty_nest", "left_behind", "lost_only_child"}
    level = {r.id: r.capacity_level for r in county.residents}
    assert all(level[rid] >= 3 for rid, c in pairs if c.value == "disabled")


def test_the_service_button_asks_only_for_protocol_kinds() -> None:
    assert set(SERVICE_KIND_WEIGHTS) <= SERVICE_KINDS


# --------------------------------------------------------------------------- plans (pure)


def _orders(n: int = 2000, booked: bool = False, assigned: bool = True) -> list[tuple[OrderFacts, tuple]]:  # type: ignore[type-arg]
    out = []
    for i in range(n):
        f = OrderFacts(i, "meal", LEVELS, T0, T0 + timedelta(hours=20) if booked else None, assigned)
        out.append((f, plan_order(f, random.Random(f"t:{i}"))))
    return out


def test_order_plans_are_ordered_reproducible_and_mostly_on_time() -> None:
    plans = _orders()
    assert plan_order(plans[5][0], random.Random("t:5")) == plans[5][1]
    ends: Counter[str] = Counter()
    late_accept = 0
    for _, steps in plans:
        times = [s.at for s in steps]
        assert times == sorted(times)
        ends[steps[-1].action] += 1
        accept = next((s for s in steps if s.action == "accept"), None)
        if accept is not None and (accept.at - T0).total_seconds() > LEVELS["accept_within_s"]:
            late_accept += 1
        for s in steps:
            if s.action == "confirm":
                assert ("satisfaction" in s.body) != ("not_done" in s.body)
            if s.action == "cancel":
                assert s.body["reason"].strip()
    n = len(plans)
    assert ends["close"] / n > 0.7
    assert 0.04 < ends["cancel"] / n < 0.14
    assert 0.03 < ends["done"] / n < 0.14  # never confirmed
    assert 0.04 < late_accept / n < 0.14


def test_an_unplaced_order_is_assigned_by_hand_first() -> None:
    for _, steps in _orders(200, assigned=False):
        assert steps[0].action == "assign_holder" and steps[1].action == "assign_staff"


def test_a_booked_order_starts_around_its_time() -> None:
    booked_for = T0 + timedelta(hours=20)
    starts = [s.at for _, steps in _orders(1000, booked=True) for s in steps if s.action == "start"]
    grace = timedelta(seconds=LEVELS["start_grace_s"])
    late = sum(1 for s in starts if s > booked_for + grace) / len(starts)
    assert 0.03 < late < 0.12
    assert min(starts) >= booked_for - timedelta(minutes=21)


def test_visit_plans_done_late_missed_and_cancelled() -> None:
    due = T0 + timedelta(days=4)
    outcomes: Counter[str] = Counter()
    for i in range(3000):
        f = VisitFacts(i, T0, T0 - timedelta(days=26), due, 32.68, 112.83)
        steps = plan_visit(f, random.Random(f"v:{i}"))
        if not steps:
            outcomes["missed"] += 1
            continue
        last = steps[-1]
        if last.action == "cancel":
            outcomes["cancelled"] += 1
            continue
        assert last.action == "complete" and last.at >= T0
        if steps[0].action == "checkin":
            assert steps[0].at <= last.at
        else:
            assert last.body["seen"] == "by_phone"
        if last.body["requested_service_kind"] is not None:
            assert last.body["follow_up_needed"] is True
        if last.at < due:
            outcomes["on_time"] += 1
        elif last.at < due + timedelta(hours=24):
            outcomes["late"] += 1
        else:
            outcomes["very_late"] += 1
    n = 3000
    assert outcomes["on_time"] / n > 0.7
    for key, low, high in (("late", 0.05, 0.12), ("missed", 0.03, 0.09), ("cancelled", 0.005, 0.04)):
        assert low < outcomes[key] / n < high, outcomes
    assert outcomes["very_late"] > 0


def test_phone_bookings_come_by_day_and_are_the_same_each_time() -> None:
    residents = [f"r{i}" for i in range(50)]
    day = date(2026, 12, 1)
    calls = plan_bookings(day, residents, TZ, 1)
    assert calls == plan_bookings(day, residents, TZ, 1)
    assert 4 <= len(calls) <= 9
    for c in calls:
        local = c.at.astimezone(TZ)
        assert local.date() == day and 8 <= local.hour < 18
        assert c.booked_for is None or c.booked_for > c.at
    assert plan_bookings(day, [], TZ, 1) == []


# --------------------------------------------------------------------------- two days, on the database


async def _device_orders(maker: async_sessionmaker[AsyncSession], at: datetime, n: int) -> None:
    """Service buttons pressed in ``n`` homes, taken in as the dispatcher's intake does."""
    async with maker() as s:
        devices = (
            await s.execute(select(Device.id, Device.home_id).where(Device.kind == "hub").order_by(Device.id))
        ).all()
    kinds = sorted(SERVICE_KIND_WEIGHTS)
    for i, d in enumerate(devices[:n]):
        eid = f"svc-{at:%d%H%M}-{i}"
        await store_event(
            maker,
            d.id,
            eid,
            "service_request",
            at,
            "service",
            {"kind": kinds[i % len(kinds)]},
            home_id=d.home_id,
        )
        async with maker() as s, s.begin():
            ev = await s.scalar(select(DeviceEvent).where(DeviceEvent.event_id == eid))
            assert ev is not None
            await order_from_event(s, ev=ev, actor="test:intake", now=at)


async def _one_street(maker: async_sessionmaker[AsyncSession]) -> None:
    """The demo county's stations, staff and providers, and the homes of one street (a
    seventh of the county: every write is a commit, and the test stays fast)."""
    county = generate_demo_county()
    homes = [h for h in county.homes if h.station_id.startswith("binhe-")]
    kept = {h.id for h in homes}
    county = replace(
        county,
        homes=homes,
        residents=[r for r in county.residents if r.home_id in kept],
        devices=[d for d in county.devices if d.home_id in kept],
    )
    await load_demo_county(maker, county, now=T0)


async def _operators_with_due_orders(
    maker: async_sessionmaker[AsyncSession], db_url: str
) -> tuple[SimulatedServices, SimulatedOperators]:
    """One street with demo services and three device orders, every step of their plans due."""
    await _one_street(maker)
    await ensure_demo_services(maker, now=T0)
    await _device_orders(maker, T0, 3)
    clock = ManualClock(T0 + timedelta(days=3))  # every step of their plans is due
    services = SimulatedServices(maker=maker, clock=clock, catalogue=load_catalogue(), bookings=False)
    ops = SimulatedOperators(
        maker=maker, clock=clock, ctx=load_context(load_settings(database_url=db_url)), services=services
    )
    return services, ops


@pytest.mark.usefixtures("cheap_argon2")
async def test_the_operators_run_works_the_orders_in_a_task_of_its_own(
    maker: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    services, ops = await _operators_with_due_orders(maker, db_url)
    stop = asyncio.Event()
    task = asyncio.create_task(ops.run(stop))
    try:
        for _ in range(200):
            async with maker() as s:
                left = await s.scalar(
                    select(func.count()).select_from(Order).where(Order.status.in_(("created", "assigned")))
                )
            if not left:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert left == 0 and services.stats.actions["order_accept"] >= 2, services.stats


@pytest.mark.usefixtures("cheap_argon2")
@pytest.mark.parametrize("why", ["a_call_waits", "the_database_is_busy"])
async def test_the_services_task_never_spins(
    maker: async_sessionmaker[AsyncSession], db_url: str, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a step of theirs due that they may not do (a call needs the operators) or
    cannot (SQLite busy), the services look again after a real pause, not at once: the
    loop spun hundreds of times a real second in the demo history, and the CPU it ate
    was the operators' (answers hours late at x10,000)."""
    services, ops = await _operators_with_due_orders(maker, db_url)
    if why == "a_call_waits":
        monkeypatch.setattr(ops, "_urgent", lambda: True)
    else:

        async def busy(*_: object, **__: object) -> None:
            raise OperationalError("UPDATE orders", {}, sqlite3.OperationalError("database is locked"))

        monkeypatch.setattr(services, "_order_act", busy)
    looks = 0
    real_step = services.step

    async def counted(*args: Any, **kwargs: Any) -> float | None:
        nonlocal looks
        looks += 1
        return await real_step(*args, **kwargs)

    monkeypatch.setattr(services, "step", counted)
    stop = asyncio.Event()
    task = asyncio.create_task(ops._run_services(stop))
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(task, 5)
    # at most one look per pause (URGENT_RETRY_S waiting for the calls, min_pause_s after a failure)
    pause = ops.URGENT_RETRY_S if why == "a_call_waits" else ops.min_pause_s
    assert looks <= 1.0 / pause + 2, looks
    assert sum(services.stats.actions.values()) == 0


@pytest.mark.usefixtures("cheap_argon2")
async def test_two_days_of_orders_and_visits_show_on_the_oversight_figures(
    maker: async_sessionmaker[AsyncSession], db_url: str
) -> None:
    clock = ManualClock(T0)
    await _one_street(maker)
    providers, groups = await ensure_demo_services(maker, now=T0)
    assert providers == 7 and groups > 10
    assert await ensure_demo_services(maker, now=T0) == (0, 0)  # once
    rules = load_visit_rules()
    services = SimulatedServices(
        maker=maker,
        clock=clock,
        catalogue=load_catalogue(),
        missed_after_h=rules.missed_after_h,
        behaviour=ServiceBehaviour(bookings_per_day=(2, 3)),
    )
    ops = SimulatedOperators(
        maker=maker, clock=clock, ctx=load_context(load_settings(database_url=db_url)), services=services
    )
    # (no ops.prepare(): the stations' simulated operators are created on first need)

    # emergencies first: while a call needs the operators nothing of the services is done
    await _device_orders(maker, T0, 3)
    clock.advance(3600)
    await services.step(ops._login, lambda: True)
    assert sum(services.stats.actions.values()) == 0 and services.stats.orders_planned == 3

    end = T0 + timedelta(days=2)  # across the local month's end (and a week's)
    while clock.now() < end:
        now = clock.now()
        if now.minute == 0:  # the dispatcher's visits round
            async with maker() as s, s.begin():
                await generation.sync_plans(s, rules=rules, now=now)
                await generation.generate_visits(s, rules=rules, now=now)
                await generation.refresh_statuses(s, rules=rules, now=now)
            async with maker() as s, s.begin():
                await generation.escalate_missed(s, rules=rules, now=now, actor="test:visits")
        await breaches.check_once(maker, now=now, channel="log")
        if now.minute == 0 and now.hour in (2, 7):  # local 10:00 and 15:00
            await _device_orders(maker, now, 3)
        await ops.step()
        await services.step(ops._login, ops._urgent)  # what ops.run's services task does
        clock.advance(900)
    await ops.step()
    await services.step(ops._login, ops._urgent)

    async with maker() as s:
        order_states = Counter((await s.scalars(select(Order.status))).all())
        visit_states = Counter((await s.scalars(select(Visit.status))).all())
        sources = Counter((await s.scalars(select(Order.source))).all())
        providers = set(await s.scalars(select(Order.provider_id).where(Order.provider_id.is_not(None))))
        breached = await s.scalar(
            select(func.count()).select_from(AuditRow).where(AuditRow.kind == "order_breached")
        )
        actors = set(
            await s.scalars(select(AuditRow.actor).where(AuditRow.kind.in_(("order_accept", "visit_done"))))
        )
        stored_groups = await s.scalar(select(func.count()).select_from(ResidentCategory))
        all_providers = set(await s.scalars(select(Provider.id)))
    assert stored_groups == groups
    assert {"closed", "cancelled"} <= set(order_states) and len(order_states) >= 4, order_states
    assert sources["device"] > 0 and sources["operator"] > 0, sources
    assert len(providers & all_providers) >= 3, providers
    assert breached and breached > 0
    assert {"done", "missed"} <= set(visit_states) and len(visit_states) >= 3, visit_states
    assert actors and all("sim-" in a for a in actors), actors

    now = clock.now()
    report = {}
    for month in ("2026-11", "2026-12"):
        async with maker() as s:
            report[month] = (
                await orders_data(s, scope=None, station_id=None, month=month, now=now),
                await visits_data(s, scope=None, station_id=None, month=month, now=now),
            )
    orders = [report[m][0]["summary"] for m in report]
    assert sum(o["orders"] for o in orders) == sum(order_states.values())
    assert sum(o["done"] for o in orders) > 0 and sum(o["cancelled"] for o in orders) > 0
    assert sum(o["satisfaction_n"] for o in orders) > 0
    met = sum(o["accept_within_level_met"] for o in orders)
    eligible = sum(o["accept_within_level_eligible"] for o in orders)
    assert 0 < met < eligible, (met, eligible)  # mostly on time, some late
    assert len(report["2026-12"][0]["by_provider"]) >= 3
    november = report["2026-11"][1]["totals"]
    assert november["done_on_time"] > 0 and november["missed"] > 0 and november["late"] > 0, november
    assert report["2026-12"][1]["totals"]["due"] > 0
    assert (await verify_log(maker)).ok

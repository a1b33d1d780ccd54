"""Turning plans into visit rows, and open visits into late, missed and escalated ones.

Run by the dispatcher's visits loop (``dispatcher.visits.loop``), in any number of
copies: plans and visits go in with ``INSERT … ON CONFLICT DO NOTHING`` on their unique
keys (plan key; plan + period), status changes are conditional UPDATEs, and an
escalation is recorded only by the copy whose UPDATE raised the visit's level.

Assignment: a visit goes to the resident's home station (the community station). It is
also given to a named person when the station has a roster for visits: staff whose role
is one of the policy's ``visitor_roles`` and whose ``shifts`` is not empty; the planner
picks one of them per resident, stably (``planner.choose_visitor``). ``on_duty`` is not
used: it says who is there now, while a visit is due over a week or a month.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.logs import mask_phone
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.audit.models import AuditRow
from dispatcher.calls.models import Call
from dispatcher.notifications.area import StationPeople, managers_of
from dispatcher.notifications.service_pages import VISIT_MISSED, queue_service_page
from dispatcher.registry.models import Home, Resident, Staff, Station
from dispatcher.registry.people import station_people
from dispatcher.visits import planner
from dispatcher.visits.models import OPEN_STATUSES, ResidentCategory, Visit, VisitPlan, VisitStatus
from dispatcher.visits.rules import Category, Frequency, VisitRules

__all__ = ["escalate_missed", "generate_visits", "refresh_statuses", "sync_plans"]

# every period a generation round may still create starts within this window
_LOOKBACK = timedelta(days=40)
ESCALATION_TARGETS = {1: "station_manager", 2: "street"}


def _insert(session: AsyncSession, table: Any, rows: list[dict[str, Any]], keys: list[str]) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table).values(rows).on_conflict_do_nothing(index_elements=keys)
    return sqlite_insert(table).values(rows).on_conflict_do_nothing(index_elements=keys)


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


async def _resident_facts(session: AsyncSession) -> list[planner.ResidentFacts]:
    cats: dict[str, set[Category]] = defaultdict(set)
    known = {c.value for c in Category}
    for rid, cat in (
        await session.execute(select(ResidentCategory.resident_id, ResidentCategory.category))
    ).all():
        if cat in known:
            cats[rid].add(Category(cat))
    rows = (await session.execute(select(Resident.id, Resident.capacity_level, Resident.living_alone))).all()
    return [
        planner.ResidentFacts(r.id, r.capacity_level, bool(r.living_alone), frozenset(cats[r.id]))
        for r in rows
    ]


async def _follow_ups(session: AsyncSession, rules: VisitRules, now: datetime) -> list[planner.PlanSpec]:
    """One plan per emergency call closed (resolved or cancelled) within the lookback."""
    since = now - timedelta(hours=rules.follow_up_lookback_h)
    closed = (
        select(AuditRow.call_id, func.min(AuditRow.at).label("closed_at"))
        .where(AuditRow.kind.in_((AuditKind.resolved.value, AuditKind.cancelled.value)))
        .where(AuditRow.at >= since, AuditRow.at <= now, AuditRow.call_id.is_not(None))
        .group_by(AuditRow.call_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(Call.id, Call.resident_id, closed.c.closed_at)
            .join(closed, closed.c.call_id == Call.id)
            .where(Call.resident_id.is_not(None))
        )
    ).all()
    return [planner.follow_up_plan(str(r.resident_id), int(r.id), r.closed_at) for r in rows]


async def sync_plans(session: AsyncSession, *, rules: VisitRules, now: datetime) -> int:
    """Store the plans the policy asks for (new ones inserted, recurring ones no longer
    asked for set inactive, asked-for ones active again); returns how many rows changed."""
    wanted: list[planner.PlanSpec] = []
    for facts in await _resident_facts(session):
        wanted += planner.desired_plans(facts, rules)
    wanted += await _follow_ups(session, rules, now)
    stored = (await session.execute(select(VisitPlan.id, VisitPlan.key, VisitPlan.active))).all()
    known = {r.key for r in stored}
    # only the plans not stored yet; the insert's ON CONFLICT covers a copy racing us
    fresh = [p for p in wanted if p.key not in known]
    rows = [
        {
            "key": p.key,
            "resident_id": p.resident_id,
            "category": p.category,
            "frequency": p.frequency.value,
            "call_id": p.call_id,
            "anchor": p.anchor,
            "active": True,
            "created_at": now,
        }
        for p in fresh
    ]
    changed = 0
    for i in range(0, len(rows), 500):
        changed += _count(await session.execute(_insert(session, VisitPlan, rows[i : i + 500], ["key"])))
    # recurring plans follow the registry; a follow-up plan stays as it was made
    keys = {p.key for p in wanted}
    recurring = [r for r in stored if ":follow_up:" not in r.key]
    off = [r.id for r in recurring if r.active and r.key not in keys]
    on = [r.id for r in recurring if not r.active and r.key in keys]
    for ids, active in ((off, False), (on, True)):
        if ids:
            changed += _count(
                await session.execute(
                    update(VisitPlan)
                    .where(VisitPlan.id.in_(ids), VisitPlan.active != active)
                    .values(active=active)
                )
            )
    return changed


async def _rosters(session: AsyncSession, rules: VisitRules) -> dict[str, list[str]]:
    rows = (
        await session.execute(
            select(Staff.id, Staff.station_id).where(Staff.role.in_(rules.visitor_roles), Staff.shifts != "")
        )
    ).all()
    out: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        out[r.station_id].append(r.id)
    return out


async def generate_visits(session: AsyncSession, *, rules: VisitRules, now: datetime) -> int:
    """Insert the visits now due (``planner.next_due``); returns how many were new."""
    plans = [
        planner.PlanFacts(r.id, r.resident_id, Frequency(r.frequency), r.call_id, r.anchor)
        for r in (
            await session.execute(
                select(
                    VisitPlan.id,
                    VisitPlan.resident_id,
                    VisitPlan.frequency,
                    VisitPlan.call_id,
                    VisitPlan.anchor,
                ).where(VisitPlan.active.is_(True))
            )
        ).all()
    ]
    if not plans:
        return 0
    last_done = {
        r.resident_id: r.at
        for r in (
            await session.execute(
                select(Visit.resident_id, func.max(Visit.done_at).label("at"))
                .where(Visit.status == VisitStatus.done.value)
                .group_by(Visit.resident_id)
            )
        ).all()
    }
    existing = (
        await session.execute(
            select(Visit.plan_id, Visit.period).where(Visit.window_start >= now - _LOOKBACK)
        )
    ).all()
    due = planner.next_due(
        plans, last_done=last_done, existing=[(r.plan_id, r.period) for r in existing], now=now, rules=rules
    )
    if not due:
        return 0
    station_of = dict(
        (
            await session.execute(
                select(Resident.id, Home.station_id).join(Home, Home.id == Resident.home_id)
            )
        ).all()
    )
    rosters = await _rosters(session, rules)
    rows = []
    for d in due:
        station = station_of[d.resident_id]
        rows.append(
            {
                "plan_id": d.plan_id,
                "period": d.period,
                "resident_id": d.resident_id,
                "station_id": station,
                "staff_id": planner.choose_visitor(d.resident_id, rosters.get(station, [])),
                "window_start": d.window_start,
                "due_at": d.due_at,
                "status": planner.open_status(d.due_at, now, rules),
                "escalation_level": 0,
                "created_at": now,
                "health": "",
                "living_conditions": "",
                "needs_found": "",
                "follow_up_needed": False,
                "notes": "",
            }
        )
    made = 0
    for i in range(0, len(rows), 500):
        made += _count(
            await session.execute(_insert(session, Visit, rows[i : i + 500], ["plan_id", "period"]))
        )
    return made


async def refresh_statuses(session: AsyncSession, *, rules: VisitRules, now: datetime) -> int:
    """Open visits past due become late; past due + grace, missed (conditional updates)."""
    missed_before = now - timedelta(hours=rules.missed_after_h)
    n = _count(
        await session.execute(
            update(Visit)
            .where(
                Visit.status.in_((VisitStatus.due.value, VisitStatus.late.value)),
                Visit.due_at <= missed_before,
            )
            .values(status=VisitStatus.missed.value)
        )
    )
    n += _count(
        await session.execute(
            update(Visit)
            .where(Visit.status == VisitStatus.due.value, Visit.due_at <= now)
            .values(status=VisitStatus.late.value)
        )
    )
    return n


async def escalate_missed(
    session: AsyncSession, *, rules: VisitRules, now: datetime, actor: str, channel: str = "log"
) -> int:
    """Raise open visits to the level ``planner.escalation_target`` gives, one audit row
    (``visit_escalated``) per level, addressed to the station (manager) or its parent
    (the street centre), and the page to those people: outbox rows (purpose
    ``visit_missed``, dispatcher/notifications/service_pages.py) in this transaction, to
    the station's managers at level 1 and the street centre's at level 2 (nobody there:
    its on-duty staff, else its duty group; dispatcher/notifications/area.py). Returns
    the number of audit rows written."""
    first = now - timedelta(hours=rules.escalation.station_manager_after_h)
    rows = (
        await session.execute(
            select(
                Visit.id,
                Visit.resident_id,
                Visit.station_id,
                Visit.due_at,
                Visit.escalation_level,
                Visit.period,
            )
            .where(Visit.status.in_(OPEN_STATUSES), Visit.escalation_level < 2, Visit.due_at <= first)
            .order_by(Visit.id)
        )
    ).all()
    if not rows:
        return 0
    parents = dict((await session.execute(select(Station.id, Station.parent_id))).all())
    written = 0
    await audit.lock_head(session)
    people: dict[str, StationPeople] = {}
    for r in rows:
        target = planner.escalation_target(r.due_at, now, rules)
        if target <= r.escalation_level:
            continue
        won = await session.execute(
            update(Visit)
            .where(Visit.id == r.id, Visit.escalation_level == r.escalation_level)
            .values(escalation_level=target)
        )
        if _count(won) != 1:
            continue  # another copy escalated it first
        for level in range(r.escalation_level + 1, target + 1):
            to_station = r.station_id if level == 1 else (parents.get(r.station_id) or r.station_id)
            if to_station not in people:
                people |= await station_people(session, [to_station])
            targets = managers_of(people[to_station])
            await audit.append(
                session,
                kind=AuditKind.visit_escalated.value,
                at=now,
                actor=actor,
                station_id=to_station,
                detail={
                    "visit_id": r.id,
                    "resident_id": r.resident_id,
                    "period": r.period,
                    "level": level,
                    "to": ESCALATION_TARGETS[level],
                    "visit_station_id": r.station_id,
                    "due_at": r.due_at.isoformat(),
                    "paged": [mask_phone(t) for t in targets],
                },
            )
            queue_service_page(
                session,
                purpose=VISIT_MISSED,
                targets=targets,
                body={
                    "visit_id": r.id,
                    "resident_id": r.resident_id,
                    "period": r.period,
                    "level": level,
                    "to": ESCALATION_TARGETS[level],
                    "station_id": to_station,
                    "visit_station_id": r.station_id,
                    "due_at": r.due_at.isoformat(),
                },
                channel=channel,
                now=now,
                visit_id=r.id,
            )
            written += 1
    return written

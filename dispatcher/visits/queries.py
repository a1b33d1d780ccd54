"""Reading visits for the console, the phone and the compliance report."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.orders.models import Order
from dispatcher.registry.models import Home, Resident, Staff
from dispatcher.visits.compliance import VisitFact, parse_month
from dispatcher.visits.models import OPEN_STATUSES, Visit, VisitPlan
from dispatcher.visits.planner import period_of
from dispatcher.visits.rules import Frequency, VisitRules

__all__ = ["STATUS_FILTERS", "month_facts", "orders_of", "staff_station", "visit_rows"]

STATUS_FILTERS: dict[str, tuple[str, ...] | None] = {
    "open": OPEN_STATUSES,
    "due": ("due",),
    "late": ("late",),
    "missed": ("missed",),
    "done": ("done",),
    "cancelled": ("cancelled",),
    "all": None,
}


def _base() -> Select[Visit, str, str, str]:
    return (
        select(Visit, VisitPlan.category, Resident.name, Home.address)
        .join(VisitPlan, VisitPlan.id == Visit.plan_id)
        .join(Resident, Resident.id == Visit.resident_id)
        .join(Home, Home.id == Resident.home_id)
    )


async def visit_rows(
    session: AsyncSession,
    *,
    scope: frozenset[str] | None,
    status: str = "open",
    station_id: str | None = None,
    staff_id: str | None = None,
    visit_id: int | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[tuple[Visit, str, str, str]]:
    """Visits in ``scope`` (None: all), optionally of one station, of one staff member
    (``staff_id``: assigned to them *or* unassigned at ``station_id``), or one visit."""
    q = _base().where(Visit.station_id.in_(sorted(scope)) if scope is not None else true())
    statuses = STATUS_FILTERS[status]
    if statuses is not None:
        q = q.where(Visit.status.in_(statuses))
    if staff_id is not None:
        q = q.where((Visit.staff_id == staff_id) | (Visit.station_id == station_id))
    elif station_id is not None:
        q = q.where(Visit.station_id == station_id)
    if visit_id is not None:
        q = q.where(Visit.id == visit_id)
    q = q.order_by(Visit.due_at, Visit.id).limit(limit).offset(offset)
    return [(r[0], r[1], r[2], r[3]) for r in (await session.execute(q)).all()]


async def orders_of(session: AsyncSession, visit_ids: list[int]) -> dict[int, list[tuple[int, str, str]]]:
    """(id, kind, status) of the orders each visit's form opened, oldest first."""
    out: dict[int, list[tuple[int, str, str]]] = {}
    if not visit_ids:
        return out
    rows = await session.execute(
        select(Order.visit_id, Order.id, Order.kind, Order.status)
        .where(Order.visit_id.in_(sorted(set(visit_ids))))
        .order_by(Order.id)
    )
    for vid, oid, kind, status in rows.all():
        if vid is not None:
            out.setdefault(int(vid), []).append((int(oid), str(kind), str(status)))
    return out


async def staff_station(session: AsyncSession, *, staff_id: str) -> str | None:
    return await session.scalar(select(Staff.station_id).where(Staff.id == staff_id))


async def month_facts(
    session: AsyncSession,
    *,
    scope: frozenset[str] | None,
    month: str,
    rules: VisitRules,
    station_id: str | None = None,
) -> list[VisitFact]:
    """Every visit whose window starts in the local ``month``, in scope."""
    year, mon = parse_month(month)
    per = period_of(Frequency.monthly, datetime(year, mon, 15, 12, tzinfo=rules.tz), rules.tz)
    q = select(
        Visit.station_id, Visit.resident_id, Visit.window_start, Visit.due_at, Visit.status, Visit.done_at
    ).where(Visit.window_start >= per.start, Visit.window_start < per.due_at)
    if scope is not None:
        q = q.where(Visit.station_id.in_(sorted(scope)))
    if station_id is not None:
        q = q.where(Visit.station_id == station_id)
    return [VisitFact(*r) for r in (await session.execute(q)).all()]

"""The service-order and visit-compliance reports as plain data (I/O at this edge).

Reads the audit rows (and the little the audit log does not hold: each order's frozen
service levels, each visit's plan period, names) and hands them to the pure modules
orders_figures and visits_figures. The API (views.py), the monthly report (reports.py,
render.py) and ``carecall report`` all use these two functions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.clock import as_utc
from dispatcher.audit.models import AuditRow
from dispatcher.orders.catalogue_file import load_catalogue
from dispatcher.orders.models import Order, Provider
from dispatcher.oversight import service
from dispatcher.oversight.figures import REPORT_TZ
from dispatcher.oversight.orders_figures import (
    ORDER_GROUPINGS,
    OrderAuditRow,
    OrderGrouping,
    cancellations,
    group_orders,
    orders_from_rows,
    orders_summary,
)
from dispatcher.oversight.visits_figures import (
    VISIT_KINDS,
    VisitAuditRow,
    VisitDue,
    compliance_rows,
    not_visited_rows,
    visit_compliance,
)
from dispatcher.registry.models import Resident
from dispatcher.visits.compliance import parse_month
from dispatcher.visits.models import Visit

__all__ = ["kind_names", "month_bounds", "orders_data", "visits_data"]

ORDER_KINDS = ("created", "assign", "accept", "start", "done", "confirm", "close", "cancel")


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """UTC instants of the local month's first moment and the next month's (ValueError
    for anything but ``YYYY-MM``)."""
    year, mon = parse_month(month)
    first = datetime.combine(date(year, mon, 1), time(0), tzinfo=tz)
    nxt = datetime.combine(date(year + (mon == 12), mon % 12 + 1, 1), time(0), tzinfo=tz)
    return first.astimezone(UTC), nxt.astimezone(UTC)


def _id_in(rows: list[Any], wanted: set[int], key: str) -> list[Any]:
    return [r for r in rows if r.detail.get(key) in wanted]


async def _audit(session: AsyncSession, kinds: list[str], since: datetime) -> list[AuditRow]:
    q = select(AuditRow).where(AuditRow.kind.in_(kinds), AuditRow.at >= since).order_by(AuditRow.seq)
    return list((await session.scalars(q)).all())


async def orders_data(
    session: AsyncSession,
    *,
    scope: frozenset[str] | None,
    station_id: str | None,
    month: str,
    now: datetime,
    timezone: str = REPORT_TZ,
) -> dict[str, Any]:
    """Orders booked in the local ``month`` that the scope sees (of its homes or handed
    to its stations), by kind, provider and station; LookupError for a station out of
    scope, ValueError for a bad month."""
    tz = ZoneInfo(timezone)
    start, end = month_bounds(month, tz)
    narrowed = await service.narrow_scope(session, scope, station_id)
    q = select(Order.id, Order.levels).where(Order.created_at >= start, Order.created_at < end)
    if narrowed is not None:
        stations = sorted(narrowed)
        q = q.where(or_(Order.station_id.in_(stations), Order.assignee_station_id.in_(stations)))
    levels = {r.id: r.levels for r in (await session.execute(q)).all()}
    audit = _id_in(await _audit(session, [f"order_{k}" for k in ORDER_KINDS], start), set(levels), "order_id")
    rows = [OrderAuditRow(as_utc(r.at), r.kind, r.station_id, r.detail or {}) for r in audit]
    figs = orders_from_rows(rows, levels, month=month, now=now, tz=tz)
    infos = await service.load_stations(session)
    providers = {r.id: r.name for r in (await session.execute(select(Provider.id, Provider.name))).all()}
    grouped: dict[OrderGrouping, list[dict[str, Any]]] = {}
    for by in ORDER_GROUPINGS:
        grouped[by] = group_orders(figs, by)
        for row in grouped[by]:
            row["label"] = _label(by, row["key"], infos, providers)
    return {
        "month": month,
        "timezone": timezone,
        "station_id": station_id,
        "summary": orders_summary(figs),
        "by_kind": grouped["kind"],
        "by_provider": grouped["provider"],
        "by_station": grouped["station"],
        "cancellations": cancellations(figs),
        "kind_names": kind_names(),
    }


def kind_names() -> dict[str, dict[str, str]]:
    """Each service kind's name in both languages (config/services.yaml)."""
    catalogue = load_catalogue()
    return {k: {"en": e.name_en, "zh-CN": e.name_zh} for k, e in catalogue.kinds.items()}


def _label(
    by: OrderGrouping, key: str, infos: dict[str, service.StationInfo], providers: dict[str, str]
) -> str:
    if by == "station":
        return infos[key].name if key in infos else key
    if by == "provider":
        if key.startswith("station:"):
            sid = key.removeprefix("station:")
            return infos[sid].name if sid in infos else sid
        return providers.get(key, key)
    return key


async def visits_data(
    session: AsyncSession,
    *,
    scope: frozenset[str] | None,
    station_id: str | None,
    month: str,
    now: datetime,
    timezone: str = REPORT_TZ,
) -> dict[str, Any]:
    """Visit compliance of the local ``month`` per station in scope, from the audit log;
    LookupError for a station out of scope, ValueError for a bad month."""
    tz = ZoneInfo(timezone)
    start, end = month_bounds(month, tz)
    narrowed = await service.narrow_scope(session, scope, station_id)
    q = select(Visit.id, Visit.station_id, Visit.resident_id, Visit.window_start, Visit.due_at).where(
        Visit.window_start >= start, Visit.window_start < end
    )
    if narrowed is not None:
        q = q.where(Visit.station_id.in_(sorted(narrowed)))
    planned = [
        VisitDue(r.id, r.station_id, r.resident_id, as_utc(r.window_start), as_utc(r.due_at))
        for r in (await session.execute(q)).all()
    ]
    audit = _id_in(await _audit(session, list(VISIT_KINDS), start), {v.visit_id for v in planned}, "visit_id")
    rows = [VisitAuditRow(as_utc(r.at), r.kind, r.detail or {}) for r in audit]
    figures, escalated = visit_compliance(planned, rows, month=month, tz=tz, now=now)
    missing = sorted({r for f in figures for r in f.residents_not_visited})
    names: dict[str, str] = {}
    if missing:
        q_names = select(Resident.id, Resident.name).where(Resident.id.in_(missing))
        names = {r.id: r.name for r in (await session.execute(q_names)).all()}
    station_names = {k: v.name for k, v in (await service.load_stations(session)).items()}
    table = compliance_rows(figures, escalated, station_names, names)
    totals = {
        k: sum(r[k] for r in table) for k in ("due", "done_on_time", "late", "missed", "open", "cancelled")
    }
    totals["on_time_pct"] = (
        None if not totals["due"] else round(100.0 * totals["done_on_time"] / totals["due"], 2)
    )
    return {
        "month": month,
        "timezone": timezone,
        "station_id": station_id,
        "period": {"from": start.isoformat(), "to": (end - timedelta(microseconds=1)).isoformat()},
        "totals": totals,
        "stations": table,
        "not_visited": not_visited_rows(figures, station_names, names),
    }

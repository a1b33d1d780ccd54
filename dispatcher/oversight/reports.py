"""The reports as plain data: one function per report, shared by the API and the CLI.

Both front ends call these and only render the result, which is how the dashboard, the
downloads and ``carecall report`` are kept from ever disagreeing. Each report carries
``rows`` (the flat table every export writes) beside whatever structure it has.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, ParamSpec, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.calls.routing import RoutingConfig
from dispatcher.oversight import service, services_reports, staffing
from dispatcher.oversight.coverage import by_street, coverage, coverage_rows, what_if
from dispatcher.oversight.device_facts import load_device_facts
from dispatcher.oversight.figures import (
    CallFigures,
    Grouping,
    Period,
    graded_answer_times,
    group_rows,
    period_bounds,
    summary,
)
from dispatcher.oversight.health import device_rows
from dispatcher.oversight.review import review_list, review_rows
from dispatcher.oversight.targets import Targets
from dispatcher.oversight.text import Lang, scope_label

__all__ = [
    "ReportScope",
    "aggregates_report",
    "coverage_report",
    "devices_report",
    "monthly_data",
    "review_report",
    "summary_report",
    "timeline_report",
]


@dataclass(frozen=True, slots=True)
class ReportScope:
    """Whose figures: the caller's scope (None = whole county) narrowed to ``station_id``."""

    scope: frozenset[str] | None
    station_id: str | None = None


def _period_json(period: Period) -> dict[str, str]:
    return {"from": period.start.isoformat(), "to": period.end.isoformat()}


P = ParamSpec("P")
R = TypeVar("R")


def _gc_quiet(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run a report with the cyclic garbage collector paused (service.gc_paused).

    The pause must last until the per-call records are garbage: re-enabled while a
    month's 100,000 tuples are still alive, the collector's first pass would walk them
    all at once. When the report coroutine returns, its frame and the records go, and
    only the report itself is left for the collector to see.
    """

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with service.gc_paused():
            return await fn(*args, **kwargs)

    return run


async def _figures(
    session: AsyncSession, where: ReportScope, period: Period, targets: Targets, now: datetime
) -> list[CallFigures]:
    scope = await service.narrow_scope(session, where.scope, where.station_id)
    return await service.load_call_figures(session, period=period, scope=scope, targets=targets, now=now)


@_gc_quiet
async def summary_report(
    maker: async_sessionmaker[AsyncSession],
    *,
    where: ReportScope,
    period: Period,
    targets: Targets,
    now: datetime,
) -> dict[str, Any]:
    async with maker() as s:
        figs = await _figures(s, where, period, targets, now)
    row = {"station_id": where.station_id, **_period_json(period), **summary(figs, targets)}
    row["review"] = len(review_list(figs))
    return {
        "period": _period_json(period),
        "station_id": where.station_id,
        "summary": row,
        "rows": [row],
        # every answered call's seconds, for the dashboard's distribution chart
        "answer_times": graded_answer_times(figs),
    }


@_gc_quiet
async def aggregates_report(
    maker: async_sessionmaker[AsyncSession],
    *,
    where: ReportScope,
    period: Period,
    by: Grouping,
    targets: Targets,
    now: datetime,
) -> dict[str, Any]:
    async with maker() as s:
        figs = await _figures(s, where, period, targets, now)
    rows = group_rows(figs, by, targets)
    return {"period": _period_json(period), "station_id": where.station_id, "by": by, "rows": rows}


@_gc_quiet
async def review_report(
    maker: async_sessionmaker[AsyncSession],
    *,
    where: ReportScope,
    period: Period,
    targets: Targets,
    now: datetime,
    timelines: bool = True,
    limit: int | None = None,
    offset: int = 0,
) -> dict[str, Any]:
    """The review list, oldest first; ``limit``/``offset`` page it (``total`` says how
    many there are). A month over a large county can hold tens of thousands of calls,
    so timelines are read only for the page returned."""
    async with maker() as s:
        figs = await _figures(s, where, period, targets, now)
        items = review_list(figs)
        page = items[offset:] if limit is None else items[offset : offset + limit]
        lines = await service.load_timelines(s, [i.figures.info.call_id for i in page]) if timelines else {}
    rows = review_rows(page)
    calls = [{**row, "timeline": [t.as_dict() for t in lines.get(row["call_id"], [])]} for row in rows]
    return {
        "period": _period_json(period),
        "station_id": where.station_id,
        "total": len(items),
        "offset": offset,
        "limit": limit,
        "calls": calls,
        "rows": rows,
    }


async def timeline_report(
    maker: async_sessionmaker[AsyncSession],
    *,
    call_id: int,
    scope: frozenset[str] | None,
) -> dict[str, Any] | None:
    """One call's audit rows; None when it does not exist or lies outside the scope."""
    async with maker() as s:
        if not await service.call_in_scope(s, call_id, scope):
            return None
        rows = [t.as_dict() for t in (await service.load_timelines(s, [call_id]))[call_id]]
    flat = [{**r, "call_id": call_id, "detail": _json_text(r["detail"])} for r in rows]
    return {"call_id": call_id, "timeline": rows, "rows": flat}


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)


async def coverage_report(
    maker: async_sessionmaker[AsyncSession],
    *,
    where: ReportScope,
    routing: RoutingConfig,
    targets: Targets,
    add_staff_station: str | None = None,
    add: int = 1,
    shift: str | None = None,
    by_shift: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Coverage now (staff on duty), or for one shift of the roster (staff rostered on
    it); ``by_shift`` adds a table of every shift's coverage by street."""
    limits = {"urban": targets.arrival.urban_min, "rural": targets.arrival.rural_min}
    the_shift = targets.shift(shift) if shift is not None else None  # ValueError if unknown
    async with maker() as s:
        scope = await service.narrow_scope(s, where.scope, where.station_id)
        infos = await service.load_stations(s)
        homes, stations = await staffing.load_coverage_inputs(s, scope, shift, infos)
        tz = service.home_timezone(infos, where.station_id)
        rosters = (
            {sh.name: await staffing.responder_counts(s, sh.name) for sh in targets.shifts}
            if by_shift
            else {}
        )
        rostered = await staffing.rostered_shift_names(s)
    now_cov = coverage(homes, stations, routing, limits)
    local_now = (now or datetime.now(UTC)).astimezone(ZoneInfo(tz))
    current = targets.shift_at(local_now.time())
    shift_rows: list[dict[str, Any]] = []
    for sh in targets.shifts if by_shift else ():
        counts = rosters[sh.name]
        staffed = [replace(st, on_duty=counts.get(st.id, 0)) for st in stations]
        for row in by_street(coverage(homes, staffed, routing, limits)):
            shift_rows.append({"shift": sh.name, "hours": sh.hours, **row})
    out: dict[str, Any] = {
        "station_id": where.station_id,
        "shift": None if the_shift is None else {"name": the_shift.name, "hours": the_shift.hours},
        "staffing": "rostered on the shift" if the_shift is not None else "on duty now",
        "current_shift": None if current is None else current.name,
        "shifts": [{"name": sh.name, "hours": sh.hours} for sh in targets.shifts],
        "unknown_shift_names": sorted(rostered - {sh.name for sh in targets.shifts}),
        "by_shift": shift_rows,
        "limits_min": limits,
        "homes": coverage_rows(now_cov),
        "by_street": by_street(now_cov),
        "stations": [
            {
                "id": st.id,
                "name": st.name,
                "tier": st.tier,
                "lat": st.lat,
                "lon": st.lon,
                "on_duty": st.on_duty,
            }
            for st in stations
            if scope is None or st.id in scope
        ],
        "what_if": None,
    }
    if add_staff_station is not None:
        if scope is not None and add_staff_station not in scope:
            raise LookupError(add_staff_station)
        result, after = what_if(homes, stations, routing, limits, station_id=add_staff_station, add=add)
        out["what_if"] = {
            "station_id": result.station_id,
            "added": result.added,
            "covered_before": result.covered_before,
            "covered_after": result.covered_after,
            "newly_covered": list(result.newly_covered),
            "newly_uncovered": list(result.newly_uncovered),
            "nearest_changed": list(result.nearest_changed),
            "by_street": by_street(after),
        }
    out["rows"] = out["homes"]
    return out


async def devices_report(
    maker: async_sessionmaker[AsyncSession],
    *,
    where: ReportScope,
    period: Period,
    targets: Targets,
    now: datetime,
) -> dict[str, Any]:
    async with maker() as s:
        scope = await service.narrow_scope(s, where.scope, where.station_id)
        stations = await service.load_stations(s)
        tz = service.home_timezone(stations, where.station_id)
        start, end = period_bounds(period, tz)
        facts = await load_device_facts(s, scope=scope, start=start, end=min(end, now))
    rows = device_rows(
        facts,
        now=now,
        test_every_days=targets.devices.test_every_days,
        low_battery_pct=targets.devices.low_battery_pct,
        tested_kinds=targets.devices.tested_kinds,
    )
    counts = {
        "devices": len(rows),
        "offline_now": sum(r["offline_now"] for r in rows),
        "not_tested": sum(r["not_tested"] for r in rows),
        "low_battery": sum(r["low_battery"] for r in rows),
        "rejected_messages": sum(r["rejected_messages"] for r in rows),
    }
    return {
        "period": _period_json(period),
        "station_id": where.station_id,
        "timezone": tz,
        "counts": counts,
        "rows": rows,
    }


def month_period(month: str) -> Period:
    """YYYY-MM → its first and last day."""
    try:
        year, mon = (int(p) for p in month.split("-"))
        first = date(year, mon, 1)
    except ValueError:
        raise ValueError(f"month must be YYYY-MM, got {month!r}") from None
    nxt = date(year + (mon == 12), mon % 12 + 1, 1)
    return Period(first, date.fromordinal(nxt.toordinal() - 1))


@_gc_quiet
async def monthly_data(
    maker: async_sessionmaker[AsyncSession],
    *,
    where: ReportScope,
    month: str,
    targets: Targets,
    routing: RoutingConfig,
    now: datetime,
    lang: Lang = "zh-CN",
) -> dict[str, Any]:
    """Everything the printable monthly report shows, as data (render.monthly_html draws
    it in ``lang``). ``station_name`` names whose figures they are: the station asked
    for, else the top of the caller's scope (a street supervisor's street)."""
    period = month_period(month)
    async with maker() as s:
        figs = await _figures(s, where, period, targets, now)
        stations = await service.load_stations(s)
        orders = await services_reports.orders_data(
            s, scope=where.scope, station_id=where.station_id, month=month, now=now
        )
        visits = await services_reports.visits_data(
            s, scope=where.scope, station_id=where.station_id, month=month, now=now
        )
    name = scope_label(
        where.station_id, where.scope, {k: (v.name, v.parent_id) for k, v in stations.items()}, lang
    )
    items = review_list(figs)
    cov = await coverage_report(maker, where=where, routing=routing, targets=targets)
    dev = await devices_report(maker, where=where, period=period, targets=targets, now=now)
    return {
        "month": month,
        "lang": lang,
        "period": _period_json(period),
        "station_id": where.station_id,
        "station_name": name,
        "generated_at": now.isoformat(timespec="seconds"),
        "summary": summary(figs, targets),
        "answer_times": graded_answer_times(figs),
        "by_day": group_rows(figs, "day", targets),
        "by_type": group_rows(figs, "type", targets),
        "by_hour": group_rows(figs, "hour", targets),
        "by_station": group_rows(figs, "station", targets),
        "trouble_by_type": group_rows([f for f in figs if f.info.event_class == "trouble"], "type", targets),
        "review": review_rows(items),
        "coverage": cov,
        "devices": dev["counts"],
        "orders": orders,
        "visits": visits,
        "targets": targets.model_dump(mode="json"),
    }


def rows_of(report: dict[str, Any]) -> Sequence[dict[str, Any]]:
    rows: Sequence[dict[str, Any]] = report["rows"]
    return rows

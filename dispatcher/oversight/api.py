"""Oversight over HTTP: ``/api/v1/reports/…`` as JSON for the console, CSV/XLSX downloads,
and the printable monthly report.

Who may read: supervisors, admins, and operators of the county centre (whose scope is
the whole county: the county platform's oversight duty). Scope is the caller's subtree;
a station or call outside it is a 404, never a 403, so nobody learns it exists.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.auth import Principal, TokenSigner, current_principal
from dispatcher.clock import Clock, SystemClock
from dispatcher.models import Role
from dispatcher.oversight import export, reports
from dispatcher.oversight.figures import Grouping, Period
from dispatcher.oversight.render import monthly_html
from dispatcher.oversight.targets import Targets, load_targets
from dispatcher.routing import RoutingConfig

__all__ = ["default_period", "reports_router"]

Format = Literal["json", "csv", "xlsx"]
REPORT_TZ = "Asia/Shanghai"


def default_period(now: datetime, timezone: str = REPORT_TZ) -> Period:
    """This month so far, by the county's calendar: what a supervisor opens first."""
    today = now.astimezone(ZoneInfo(timezone)).date()
    return Period(today.replace(day=1), today)


def _download(report: dict[str, Any], fmt: Format, name: str) -> Any:
    rows = reports.rows_of(report)
    if fmt == "json":
        return report
    body = export.to_csv(rows) if fmt == "csv" else export.to_xlsx(rows, sheet=name)
    return Response(
        content=body,
        media_type=export.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="carecall-{name}.{fmt}"'},
    )


def invalid(loc: list[str], message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors (the documented schema)."""
    return HTTPException(422, [{"loc": loc, "msg": message, "type": "value_error"}])


def reports_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    targets: Targets | None = None,
    routing: RoutingConfig | None = None,
    clock: Clock | None = None,
) -> APIRouter:
    """The reports endpoints. ``targets`` default to config/oversight.yaml and
    ``routing`` to the routing defaults (travel-time estimate for coverage)."""
    router = APIRouter(prefix="/api/v1/reports", tags=["reports"])
    the_targets = targets or load_targets()
    the_routing = routing or RoutingConfig()
    the_clock = clock or SystemClock()
    principal_dep = current_principal(maker, signer)

    async def reader(who: Principal = Depends(principal_dep)) -> Principal:
        # a default, not Annotated: postponed annotations resolve in module scope
        if who.role in (Role.admin, Role.supervisor) or who.scope is None:
            return who
        raise HTTPException(403, "reports need the supervisor or admin role, or a county-centre login")

    who_dep = Depends(reader)

    def period_of(start: date | None, end: date | None) -> Period:
        base = default_period(the_clock.now())
        try:
            return Period(start or base.start, end or (base.end if start is None else max(start, base.end)))
        except ValueError as exc:
            raise invalid(["query", "to" if end else "from"], str(exc)) from None

    def not_found(station_id: str) -> HTTPException:
        return HTTPException(404, f"no such station {station_id!r}")

    @router.get("/summary")
    async def summary(
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
        station_id: str | None = None,
        format: Format = "json",
        who: Principal = who_dep,
    ) -> Any:
        try:
            rep = await reports.summary_report(
                maker,
                where=reports.ReportScope(who.scope, station_id),
                period=period_of(start, end),
                targets=the_targets,
                now=the_clock.now(),
            )
        except LookupError:
            raise not_found(station_id or "") from None
        return _download(rep, format, "summary")

    @router.get("/aggregates")
    async def aggregates(
        by: Grouping = "station",
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
        station_id: str | None = None,
        format: Format = "json",
        who: Principal = who_dep,
    ) -> Any:
        try:
            rep = await reports.aggregates_report(
                maker,
                where=reports.ReportScope(who.scope, station_id),
                period=period_of(start, end),
                by=by,
                targets=the_targets,
                now=the_clock.now(),
            )
        except LookupError:
            raise not_found(station_id or "") from None
        return _download(rep, format, f"aggregates-{by}")

    @router.get("/review")
    async def review(
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
        station_id: str | None = None,
        format: Format = "json",
        limit: Annotated[
            int, Query(ge=1, le=5000, description="Calls per page (JSON only; CSV and XLSX hold them all).")
        ] = 500,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        who: Principal = who_dep,
    ) -> Any:
        try:
            rep = await reports.review_report(
                maker,
                where=reports.ReportScope(who.scope, station_id),
                period=period_of(start, end),
                targets=the_targets,
                now=the_clock.now(),
                timelines=format == "json",
                limit=limit if format == "json" else None,
                offset=offset if format == "json" else 0,
            )
        except LookupError:
            raise not_found(station_id or "") from None
        return _download(rep, format, "review")

    @router.get("/coverage")
    async def coverage(
        station_id: str | None = None,
        add_staff_station: str | None = None,
        n: Annotated[int, Query(ge=-50, le=50)] = 1,
        table: Literal["homes", "streets", "shifts"] = "homes",
        shift: Annotated[
            str | None,
            Query(
                max_length=32, description="Read coverage for this roster shift instead of staff on duty now."
            ),
        ] = None,
        format: Format = "json",
        who: Principal = who_dep,
    ) -> Any:
        if shift is not None and shift not in {s.name for s in the_targets.shifts}:
            known = ", ".join(s.name for s in the_targets.shifts)
            raise invalid(["query", "shift"], f"unknown shift {shift!r}; known shifts: {known}")
        try:
            rep = await reports.coverage_report(
                maker,
                where=reports.ReportScope(who.scope, station_id),
                routing=the_routing,
                targets=the_targets,
                add_staff_station=add_staff_station,
                add=n,
                shift=shift,
                by_shift=table == "shifts",
                now=the_clock.now(),
            )
        except LookupError as exc:
            raise not_found(str(exc.args[0]) if exc.args else "") from None
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        if table == "streets":
            rep["rows"] = rep["by_street"]
        elif table == "shifts":
            rep["rows"] = rep["by_shift"]
        return _download(rep, format, f"coverage-{table}")

    @router.get("/devices")
    async def devices(
        start: Annotated[date | None, Query(alias="from")] = None,
        end: Annotated[date | None, Query(alias="to")] = None,
        station_id: str | None = None,
        format: Format = "json",
        who: Principal = who_dep,
    ) -> Any:
        try:
            rep = await reports.devices_report(
                maker,
                where=reports.ReportScope(who.scope, station_id),
                period=period_of(start, end),
                targets=the_targets,
                now=the_clock.now(),
            )
        except LookupError:
            raise not_found(station_id or "") from None
        return _download(rep, format, "devices")

    @router.get("/calls/{call_id}/timeline")
    async def timeline(call_id: int, format: Format = "json", who: Principal = who_dep) -> Any:
        rep = await reports.timeline_report(maker, call_id=call_id, scope=who.scope)
        if rep is None:
            raise HTTPException(404, "no such call")
        return _download(rep, format, f"call-{call_id}-timeline")

    @router.get("/monthly", response_class=HTMLResponse)
    async def monthly(
        month: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")],
        station_id: str | None = None,
        who: Principal = who_dep,
    ) -> HTMLResponse:
        try:
            data = await reports.monthly_data(
                maker,
                where=reports.ReportScope(who.scope, station_id),
                month=month,
                targets=the_targets,
                routing=the_routing,
                now=the_clock.now(),
            )
        except LookupError:
            raise not_found(station_id or "") from None
        except ValueError as exc:
            raise invalid(["query", "month"], str(exc)) from None
        return HTMLResponse(monthly_html(data))

    return router

"""Oversight over HTTP: ``/api/v1/reports/…`` as JSON for the console, CSV/XLSX downloads,
and the printable monthly report.

Who may read: supervisors, admins, and operators of the county centre (whose scope is
the whole county: the county platform's oversight duty). Scope is the caller's subtree;
a station or call outside it is a 404, never a 403, so nobody learns it exists.

Every endpoint is the same three steps: build the report (dispatcher/oversight/reports.py),
turn "not in your scope" into a 404, and answer in the format asked for (:func:`_answer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypedDict

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock, SystemClock
from dispatcher.auth.models import Role
from dispatcher.auth.principals import Principal, current_principal
from dispatcher.auth.tokens import TokenSigner
from dispatcher.calls.routing import RoutingConfig
from dispatcher.oversight import export, reports, services_reports
from dispatcher.oversight.figures import Grouping, Period, default_period
from dispatcher.oversight.render import monthly_html
from dispatcher.oversight.targets import Targets
from dispatcher.oversight.targets_file import load_targets
from dispatcher.oversight.text import Lang, parse_lang

__all__ = ["reports_router"]

Format = Literal["json", "csv", "xlsx"]
From = Annotated[date | None, Query(alias="from")]
To = Annotated[date | None, Query(alias="to")]


LangQuery = Annotated[
    str | None,
    Query(
        max_length=16,
        description="zh-CN or en: CSV/XLSX headers (and the monthly report) in words; "
        "without it, downloads keep the column names scripts read.",
    ),
]


def _lang(value: str | None, accept: str | None = None) -> Lang | None:
    """The ``lang`` parameter (a 422 when unknown), else None; ``accept`` (the
    Accept-Language header) is only consulted by the monthly report."""
    if value is None:
        if not accept:
            return None
        first = accept.split(",")[0].split(";")[0].strip()
        try:
            return parse_lang(first)
        except ValueError:
            return None
    try:
        return parse_lang(value)
    except ValueError as exc:
        raise invalid(["query", "lang"], str(exc)) from None


def _download(report: dict[str, Any], fmt: Format, name: str, lang: Lang | None = None) -> Any:
    rows = reports.rows_of(report)
    if fmt == "json":
        return report
    body = export.to_csv(rows, lang) if fmt == "csv" else export.to_xlsx(rows, sheet=name, lang=lang)
    return Response(
        content=body,
        media_type=export.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="carecall-{name}.{fmt}"'},
    )


def invalid(loc: list[str], message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors (the documented schema)."""
    return HTTPException(422, [{"loc": loc, "msg": message, "type": "value_error"}])


def _not_found(station_id: str) -> HTTPException:
    return HTTPException(404, f"no such station {station_id!r}")


async def _answer(
    report: Awaitable[dict[str, Any]],
    station_id: str | None,
    fmt: Format,
    name: str,
    lang: Lang | None = None,
) -> Any:
    """The report in the format asked for; a station unknown or outside the caller's
    scope (LookupError) is a 404."""
    try:
        rep = await report
    except LookupError:
        raise _not_found(station_id or "") from None
    return _download(rep, fmt, name, lang)


@dataclass(frozen=True, slots=True)
class _Reports:
    """What every endpoint reads with: the database, the targets, the routing defaults
    (travel-time estimate for coverage) and the clock."""

    maker: async_sessionmaker[AsyncSession]
    targets: Targets
    routing: RoutingConfig
    clock: Clock

    def period(self, start: date | None, end: date | None) -> Period:
        """from/to, each defaulting to this month so far; a period ending before it
        starts is a 422."""
        base = default_period(self.clock.now())
        try:
            return Period(start or base.start, end or (base.end if start is None else max(start, base.end)))
        except ValueError as exc:
            raise invalid(["query", "to" if end else "from"], str(exc)) from None

    def over(self, who: Principal, station_id: str | None, start: date | None, end: date | None) -> _Over:
        """The arguments every period report takes: whose calls, which days, graded
        against which targets, as of now."""
        return _Over(
            where=reports.ReportScope(who.scope, station_id),
            period=self.period(start, end),
            targets=self.targets,
            now=self.clock.now(),
        )


class _Over(TypedDict):
    where: reports.ReportScope
    period: Period
    targets: Targets
    now: datetime


PeriodReport = Callable[..., Awaitable[dict[str, Any]]]


def _add_period_report(
    router: APIRouter, ctx: _Reports, who_dep: Any, name: str, build: PeriodReport
) -> None:
    """``GET /{name}``: a report over a period for the caller's scope (one pattern for
    the summary and the device report)."""

    async def endpoint(
        start: From = None,
        end: To = None,
        station_id: str | None = None,
        format: Format = "json",
        lang: LangQuery = None,
        who: Principal = who_dep,
    ) -> Any:
        language = _lang(lang)
        rep = build(ctx.maker, **ctx.over(who, station_id, start, end))
        return await _answer(rep, station_id, format, name, language)

    router.add_api_route(f"/{name}", endpoint, methods=["GET"], name=name)


def _add_call_reports(router: APIRouter, ctx: _Reports, who_dep: Any) -> None:
    _add_period_report(router, ctx, who_dep, "summary", reports.summary_report)

    @router.get("/aggregates")
    async def aggregates(
        by: Grouping = "station",
        start: From = None,
        end: To = None,
        station_id: str | None = None,
        format: Format = "json",
        lang: LangQuery = None,
        who: Principal = who_dep,
    ) -> Any:
        language = _lang(lang)
        rep = reports.aggregates_report(ctx.maker, by=by, **ctx.over(who, station_id, start, end))
        return await _answer(rep, station_id, format, f"aggregates-{by}", language)

    @router.get("/review")
    async def review(
        start: From = None,
        end: To = None,
        station_id: str | None = None,
        format: Format = "json",
        limit: Annotated[
            int, Query(ge=1, le=5000, description="Calls per page (JSON only; CSV and XLSX hold them all).")
        ] = 500,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        lang: LangQuery = None,
        who: Principal = who_dep,
    ) -> Any:
        language = _lang(lang)
        paged = format == "json"
        rep = reports.review_report(
            ctx.maker,
            **ctx.over(who, station_id, start, end),
            timelines=paged,
            limit=limit if paged else None,
            offset=offset if paged else 0,
        )
        return await _answer(rep, station_id, format, "review", language)


def _add_coverage_report(router: APIRouter, ctx: _Reports, who_dep: Any) -> None:
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
        lang: LangQuery = None,
        who: Principal = who_dep,
    ) -> Any:
        language = _lang(lang)
        if shift is not None and shift not in {s.name for s in ctx.targets.shifts}:
            known = ", ".join(s.name for s in ctx.targets.shifts)
            raise invalid(["query", "shift"], f"unknown shift {shift!r}; known shifts: {known}")
        try:
            rep = await reports.coverage_report(
                ctx.maker,
                where=reports.ReportScope(who.scope, station_id),
                routing=ctx.routing,
                targets=ctx.targets,
                add_staff_station=add_staff_station,
                add=n,
                shift=shift,
                by_shift=table == "shifts",
                now=ctx.clock.now(),
            )
        except LookupError as exc:
            raise _not_found(str(exc.args[0]) if exc.args else "") from None
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        if table != "homes":
            rep["rows"] = rep["by_street" if table == "streets" else "by_shift"]
        return _download(rep, format, f"coverage-{table}", language)


Month = Annotated[str, Query(min_length=7, max_length=7, description="YYYY-MM, local (Asia/Shanghai)")]


async def _month_report(
    ctx: _Reports, build: Callable[..., Awaitable[dict[str, Any]]], **kw: Any
) -> dict[str, Any]:
    """A month report in one session: a bad month is a 422, a station out of scope a 404."""
    try:
        async with ctx.maker() as s:
            return await build(s, now=ctx.clock.now(), **kw)
    except LookupError:
        raise _not_found(str(kw.get("station_id") or "")) from None
    except ValueError as exc:
        raise invalid(["query", "month"], str(exc)) from None


def _add_service_reports(router: APIRouter, ctx: _Reports, who_dep: Any) -> None:
    """Service orders and visit compliance of a month, recomputed from the audit log."""

    @router.get("/orders")
    async def orders(
        month: Month,
        by: Literal["kind", "provider", "station", "cancellations"] = "kind",
        station_id: str | None = None,
        format: Format = "json",
        lang: LangQuery = None,
        who: Principal = who_dep,
    ) -> Any:
        language = _lang(lang)
        rep = await _month_report(
            ctx, services_reports.orders_data, scope=who.scope, station_id=station_id, month=month
        )
        rep["by"] = by
        rep["rows"] = rep["cancellations"] if by == "cancellations" else rep[f"by_{by}"]
        return _download(rep, format, f"orders-{by}", language)

    @router.get("/visit-compliance")
    async def visit_compliance(
        month: Month,
        table: Literal["stations", "not_visited"] = "stations",
        station_id: str | None = None,
        format: Format = "json",
        lang: LangQuery = None,
        who: Principal = who_dep,
    ) -> Any:
        language = _lang(lang)
        rep = await _month_report(
            ctx, services_reports.visits_data, scope=who.scope, station_id=station_id, month=month
        )
        rep["rows"] = rep[table]
        return _download(rep, format, f"visit-compliance-{table}", language)


def _add_record_views(router: APIRouter, ctx: _Reports, who_dep: Any) -> None:
    """One call's timeline and the printable monthly report."""

    @router.get("/calls/{call_id}/timeline")
    async def timeline(
        call_id: int, format: Format = "json", lang: LangQuery = None, who: Principal = who_dep
    ) -> Any:
        language = _lang(lang)
        rep = await reports.timeline_report(ctx.maker, call_id=call_id, scope=who.scope)
        if rep is None:
            raise HTTPException(404, "no such call")
        return _download(rep, format, f"call-{call_id}-timeline", language)

    @router.get("/monthly", response_class=HTMLResponse)
    async def monthly(
        month: Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")],
        station_id: str | None = None,
        lang: LangQuery = None,
        accept_language: Annotated[str | None, Header(include_in_schema=False)] = None,
        who: Principal = who_dep,
    ) -> HTMLResponse:
        language = _lang(lang, accept_language) or "zh-CN"
        try:
            data = await reports.monthly_data(
                ctx.maker,
                where=reports.ReportScope(who.scope, station_id),
                month=month,
                targets=ctx.targets,
                routing=ctx.routing,
                now=ctx.clock.now(),
                lang=language,
            )
        except LookupError:
            raise _not_found(station_id or "") from None
        except ValueError as exc:
            raise invalid(["query", "month"], str(exc)) from None
        return HTMLResponse(monthly_html(data, language))


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
    ctx = _Reports(maker, targets or load_targets(), routing or RoutingConfig(), clock or SystemClock())
    principal_dep = current_principal(maker, signer)

    async def reader(who: Principal = Depends(principal_dep)) -> Principal:
        # a default, not Annotated: postponed annotations resolve in module scope
        if who.role in (Role.admin, Role.supervisor) or who.scope is None:
            return who
        raise HTTPException(403, "reports need the supervisor or admin role, or a county-centre login")

    who_dep = Depends(reader)
    _add_call_reports(router, ctx, who_dep)
    _add_coverage_report(router, ctx, who_dep)
    _add_period_report(router, ctx, who_dep, "devices", reports.devices_report)
    _add_service_reports(router, ctx, who_dep)
    _add_record_views(router, ctx, who_dep)
    return router

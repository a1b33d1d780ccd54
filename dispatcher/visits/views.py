"""The visits API: the console's list and actions (``/api/v1/visits``), the phone's
(``/api/v1/m/visits``: responders may only use ``/m/`` paths) and the monthly compliance
report (``/api/v1/reports/visits?month=YYYY-MM``).

Scope is the station tree, as for calls: an operator or supervisor sees and acts on the
visits of stations in their scope. A responder acts on visits assigned to their own staff
row or to their staff row's station.

The form (``…/done``) may ask for services (``service_kinds``, kinds of the catalogue
config/services.yaml, and a short ``service_note``): saving it opens one service order per
kind (dispatcher.visits.actions); each visit lists the orders it opened (``orders``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock, SystemClock
from dispatcher.auth.models import Role
from dispatcher.auth.principals import Principal, current_principal, in_scope
from dispatcher.auth.privacy import record_reads
from dispatcher.auth.tokens import TokenSigner
from dispatcher.orders.catalogue import Catalogue
from dispatcher.orders.catalogue_file import load_catalogue
from dispatcher.visits import actions, queries
from dispatcher.visits.compliance import compliance, parse_month
from dispatcher.visits.config_file import load_visit_rules
from dispatcher.visits.models import Seen, Visit
from dispatcher.visits.needs import MAX_KINDS
from dispatcher.visits.rules import VisitRules

__all__ = ["visits_router"]

RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]
StatusFilter = Literal["open", "due", "late", "missed", "done", "cancelled", "all"]
CONSOLE_ROLES = (Role.operator, Role.supervisor, Role.admin)


class VisitOrderOut(BaseModel):
    """An order the visit's form opened (the whole order: ``GET /api/v1/orders/{id}``)."""

    id: int
    kind: str
    status: str


class VisitOut(BaseModel):
    id: int
    resident_id: str
    resident_name: str
    address: str
    category: str
    period: str
    station_id: str
    staff_id: str | None
    window_start: datetime
    due_at: datetime
    status: str
    escalation_level: int
    checkin_at: datetime | None
    checkin_lat: float | None
    checkin_lon: float | None
    done_at: datetime | None
    done_by: str | None
    seen: str | None
    health: str
    living_conditions: str
    needs_found: str
    follow_up_needed: bool
    requested_service_kind: str | None
    notes: str
    cancel_reason: str | None
    orders: list[VisitOrderOut] = Field(default_factory=list)


class CheckInIn(BaseModel):
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    @model_validator(mode="after")
    def _both(self) -> CheckInIn:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        return self


class VisitFormIn(BaseModel):
    seen: Seen
    health: str = Field(default="", max_length=2000)
    living_conditions: str = Field(default="", max_length=2000)
    needs_found: str = Field(default="", max_length=2000)
    follow_up_needed: bool = False
    # a hook for service orders: the kind of order the visitor asks for (meal, cleaning, …)
    requested_service_kind: str | None = Field(default=None, pattern=r"^[a-z_]{1,32}$")
    notes: str = Field(default="", max_length=2000)
    # services to order (kinds of the catalogue): saving opens one order per kind
    service_kinds: list[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]] = Field(
        default_factory=list, max_length=MAX_KINDS
    )
    service_note: str = Field(default="", max_length=500, description="the orders' request notes")

    @model_validator(mode="after")
    def _kind_needs_follow_up(self) -> VisitFormIn:
        if (self.requested_service_kind is not None or self.service_kinds) and not self.follow_up_needed:
            raise ValueError("a requested service needs follow_up_needed: true")
        return self

    def form(self) -> actions.VisitForm:
        data = self.model_dump()
        return actions.VisitForm(**{**data, "service_kinds": tuple(data["service_kinds"])})


class CancelIn(BaseModel):
    reason: str = Field(min_length=1, max_length=200)


class StationMonthOut(BaseModel):
    station_id: str
    due: int
    done_on_time: int
    late: int
    missed: int
    open: int
    cancelled: int
    on_time_rate: float | None
    residents_not_visited: list[str]


class ComplianceOut(BaseModel):
    month: str
    timezone: str
    stations: list[StationMonthOut]


Row = tuple[Visit, str, str, str]


def _out(row: Row, orders: dict[int, list[VisitOrderOut]]) -> VisitOut:
    v, category, name, address = row
    fields = {k: getattr(v, k) for k in VisitOut.model_fields if hasattr(v, k) and k != "orders"}
    return VisitOut(
        **fields, category=category, resident_name=name, address=address, orders=orders.get(v.id, [])
    )


async def _outs(session: AsyncSession, rows: list[Row]) -> list[VisitOut]:
    opened = await queries.orders_of(session, [r[0].id for r in rows])
    orders = {
        vid: [VisitOrderOut(id=i, kind=k, status=st) for i, k, st in found] for vid, found in opened.items()
    }
    return [_out(r, orders) for r in rows]


_STATUS = {"not_found": 404, "invalid": 422}


def _refused(exc: actions.VisitError) -> HTTPException:
    return HTTPException(_STATUS.get(exc.code, 409), str(exc))


Act = Callable[[AsyncSession, int, Principal], Awaitable[Visit]]


class _Visits:
    def __init__(
        self, maker: async_sessionmaker[AsyncSession], clock: Clock, rules: VisitRules, catalogue: Catalogue
    ) -> None:
        self.maker, self.clock, self.rules, self.catalogue = maker, clock, rules, catalogue

    async def log_reads(
        self, session: AsyncSession, who: Principal, rows: list[tuple[Visit, str, str, str]], route: str
    ) -> None:
        """A list names residents and their addresses: each read is logged (auth.privacy)."""
        await record_reads(
            session, who=who, resident_ids=[r[0].resident_id for r in rows], route=route, now=self.clock.now()
        )

    async def console_row(self, session: AsyncSession, who: Principal, visit_id: int) -> None:
        found = await queries.visit_rows(session, scope=who.scope, status="all", visit_id=visit_id)
        if not found:
            raise HTTPException(404, f"no visit {visit_id}")

    async def phone_row(self, session: AsyncSession, who: Principal, visit_id: int) -> None:
        staff_id = _staff_of(who)
        station = await queries.staff_station(session, staff_id=staff_id)
        found = await queries.visit_rows(
            session, scope=None, status="all", staff_id=staff_id, station_id=station, visit_id=visit_id
        )
        if not found:
            raise HTTPException(404, f"no visit {visit_id} for you")

    async def act(self, who: Principal, visit_id: int, phone: bool, do: Act) -> VisitOut:
        async with self.maker() as session, session.begin():
            await (self.phone_row if phone else self.console_row)(session, who, visit_id)
            try:
                await do(session, visit_id, who)
            except actions.VisitError as exc:
                raise _refused(exc) from None
        async with self.maker() as session:
            rows = await queries.visit_rows(session, scope=None, status="all", visit_id=visit_id)
            [out] = await _outs(session, rows)
            return out

    def check_in(self, body: CheckInIn) -> Act:
        now = self.clock.now()

        async def do(s: AsyncSession, vid: int, who: Principal) -> Visit:
            return await actions.check_in(
                s, visit_id=vid, actor=_actor(who), now=now, lat=body.lat, lon=body.lon
            )

        return do

    def complete(self, body: VisitFormIn) -> Act:
        now = self.clock.now()
        form = body.form()

        async def do(s: AsyncSession, vid: int, who: Principal) -> Visit:
            return await actions.complete(
                s,
                visit_id=vid,
                actor=_actor(who),
                now=now,
                form=form,
                catalogue=self.catalogue,
                order_actor=f"user:{who.username}",  # as the orders API names its actors
            )

        return do

    def cancel(self, body: CancelIn) -> Act:
        now = self.clock.now()

        async def do(s: AsyncSession, vid: int, who: Principal) -> Visit:
            return await actions.cancel(s, visit_id=vid, actor=_actor(who), now=now, reason=body.reason)

        return do

    async def report(self, who: Principal, month: str, station_id: str | None) -> ComplianceOut:
        try:
            parse_month(month)
        except ValueError as exc:  # FastAPI's own 422 shape, as the OpenAPI schema declares
            raise HTTPException(
                422, [{"loc": ["query", "month"], "msg": str(exc), "type": "value_error"}]
            ) from None
        if station_id is not None and not in_scope(who, station_id):
            raise HTTPException(404, f"no station {station_id} in your scope")
        async with self.maker() as session:
            facts = await queries.month_facts(
                session, scope=who.scope, month=month, rules=self.rules, station_id=station_id
            )
        figures = compliance(facts, month=month, tz=self.rules.tz, now=self.clock.now())
        return ComplianceOut(
            month=month,
            timezone=self.rules.timezone,
            stations=[StationMonthOut(**vars(f), on_time_rate=f.on_time_rate) for f in figures],
        )


def _actor(who: Principal) -> str:
    return f"{who.display_name} ({who.username})"


def _staff_of(who: Principal) -> str:
    if who.role is not Role.responder or not who.staff_id:
        raise HTTPException(403, "the phone app is for responders bound to a staff member")
    return who.staff_id


def _console(who: Principal) -> Principal:
    if who.role not in CONSOLE_ROLES:
        raise HTTPException(403, "this needs the operator, supervisor or admin role")
    return who


def visits_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    clock: Clock | None = None,
    rules: VisitRules | None = None,
    catalogue: Catalogue | None = None,
) -> APIRouter:
    """The visits endpoints; ``rules`` default to config/visits.yaml, ``catalogue`` (the
    kinds a form may order) to config/services.yaml."""
    router = APIRouter(prefix="/api/v1", tags=["visits"])
    api = _Visits(maker, clock or SystemClock(), rules or load_visit_rules(), catalogue or load_catalogue())
    who_dep = Depends(current_principal(maker, signer))

    @router.get("/visits", response_model=list[VisitOut])
    async def list_visits(
        status: StatusFilter = "open",
        station_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
        who: Principal = who_dep,
    ) -> list[VisitOut]:
        _console(who)
        async with maker() as session, session.begin():
            rows = await queries.visit_rows(
                session, scope=who.scope, status=status, station_id=station_id, limit=limit, offset=offset
            )
            await api.log_reads(session, who, rows, "GET /api/v1/visits")
            return await _outs(session, rows)

    @router.post("/visits/{visit_id}/checkin", response_model=VisitOut)
    async def console_check_in(
        visit_id: RowId, body: Annotated[CheckInIn | None, Body()] = None, who: Principal = who_dep
    ) -> VisitOut:
        return await api.act(_console(who), visit_id, False, api.check_in(body or CheckInIn()))

    @router.post("/visits/{visit_id}/done", response_model=VisitOut)
    async def console_done(visit_id: RowId, body: VisitFormIn, who: Principal = who_dep) -> VisitOut:
        return await api.act(_console(who), visit_id, False, api.complete(body))

    @router.post("/visits/{visit_id}/cancel", response_model=VisitOut)
    async def console_cancel(visit_id: RowId, body: CancelIn, who: Principal = who_dep) -> VisitOut:
        return await api.act(_console(who), visit_id, False, api.cancel(body))

    @router.get("/m/visits", response_model=list[VisitOut])
    async def phone_visits(status: StatusFilter = "open", who: Principal = who_dep) -> list[VisitOut]:
        staff_id = _staff_of(who)
        async with maker() as session, session.begin():
            station = await queries.staff_station(session, staff_id=staff_id)
            rows = await queries.visit_rows(
                session, scope=None, status=status, staff_id=staff_id, station_id=station
            )
            await api.log_reads(session, who, rows, "GET /api/v1/m/visits")
            return await _outs(session, rows)

    @router.post("/m/visits/{visit_id}/checkin", response_model=VisitOut)
    async def phone_check_in(
        visit_id: RowId, body: Annotated[CheckInIn | None, Body()] = None, who: Principal = who_dep
    ) -> VisitOut:
        return await api.act(who, visit_id, True, api.check_in(body or CheckInIn()))

    @router.post("/m/visits/{visit_id}/done", response_model=VisitOut)
    async def phone_done(visit_id: RowId, body: VisitFormIn, who: Principal = who_dep) -> VisitOut:
        return await api.act(who, visit_id, True, api.complete(body))

    @router.get("/reports/visits", response_model=ComplianceOut)
    async def visits_report(
        month: Annotated[str, Query(min_length=7, max_length=7)],
        station_id: str | None = None,
        who: Principal = who_dep,
    ) -> ComplianceOut:
        if who.role not in (Role.admin, Role.supervisor) and who.scope is not None:
            raise HTTPException(403, "reports need the supervisor or admin role, or a county-centre login")
        return await api.report(who, month, station_id)

    return router

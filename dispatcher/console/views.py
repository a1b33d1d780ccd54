"""Read endpoints shaped for the operator console, under ``/api/v1/console``.

The calls API answers "what is the call"; an operator at 3 a.m. also needs "who is this,
whom do I ring, which sensor fired, what were the vital signs, who can I send, where is
it" in one request, so the detail pane fills at once instead of after six round trips.
Everything here is read-only and scoped like the rest of the API (outside the caller's
subtree is a 404). The reads are in ``dispatcher.console.queries``, the shaping (trend,
ages, redaction) in ``dispatcher.console.detail``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.rules import RulesConfig
from dispatcher.auth.principals import Principal, current_principal
from dispatcher.auth.privacy import log_reads, mask_number, redact_event_data, sees_health_data
from dispatcher.auth.tokens import TokenSigner
from dispatcher.calls.context import OUTCOMES, DispatchContext
from dispatcher.calls.models import Call
from dispatcher.calls.ranking import HomePoint, rank_candidates
from dispatcher.calls.routing import RoutingConfig
from dispatcher.calls.visibility import call_visible
from dispatcher.console import queries
from dispatcher.console.detail import TREND_WINDOW, reach_km, redacted, trend_points, zone
from dispatcher.console.schemas import (
    BoardRow,
    CallContext,
    CandidateRow,
    ConsoleMe,
    MapData,
    StationBrief,
)

# the send dialog's list: more than any street sends from, a bound on a county's
MAX_CANDIDATES = 100


def console_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    ctx: DispatchContext | None = None,
    rules: RulesConfig | None = None,
    tile_url: str | None = None,
) -> APIRouter:
    """``/api/v1/console/me``, ``/calls/{id}/context``, ``/calls/{id}/candidates`` and ``/board``."""
    router = APIRouter(prefix="/api/v1/console", tags=["console"])
    who_dep = Depends(current_principal(maker, signer))
    the_rules = rules or RulesConfig()
    routing_cfg = ctx.dispatch_cfg.routing if ctx is not None else RoutingConfig()

    @router.get("/me", response_model=ConsoleMe)
    async def me(who: Principal = who_dep) -> ConsoleMe:
        """Who is signed in, where, in which time zone: the console's header and clocks."""
        async with maker() as s:
            user, st = await queries.user_and_station(s, user_id=who.user_id, station_id=who.station_id)
        brief = StationBrief(id=st.id, name=st.name, tier=st.tier, timezone=st.timezone) if st else None
        return ConsoleMe(
            username=who.username,
            display_name=who.display_name,
            role=who.role.value,
            locale=user.locale if user else "zh-CN",
            station=brief,
            timezone=str(zone(st.timezone if st else None)),
            outcomes=list(OUTCOMES),
            tile_url=tile_url,
        )

    @router.get("/calls/{call_id}/context", response_model=CallContext)
    async def call_context(call_id: int, who: Principal = who_dep) -> CallContext:
        now = datetime.now(UTC)
        async with maker() as s:
            call, place = await _place_or_404(s, who, call_id)
            home = place.home
            tz = zone(place.station.timezone if place.station else None)
            today = now.astimezone(tz).date()
            resident = await queries.resident_info(
                s, resident_id=call.resident_id, rules=the_rules, today=today
            )
            devices, latest = await queries.home_devices(s, call=call)
            events = await queries.home_events(s, home_id=home.id, call_id=call.id, since=now - TREND_WINDOW)
            responders = await queries.responders(s, who=who, call=call, home=home)
            stations = await queries.map_stations(s, who=who, call=call, home=home)
            history = await queries.vitals_history(s, home_id=home.id)
        trend = trend_points(events, latest, history)
        area = home.area or "urban"
        if not sees_health_data(who):
            resident = redacted(resident)
            trend = []
            devices = [d.model_copy(update={"metrics": redact_event_data(d.metrics)}) for d in devices]
        await log_reads(
            maker,
            who=who,
            resident_ids=[call.resident_id if resident is not None else None],
            route="GET /api/v1/console/calls/{call_id}/context",
            call_id=call.id,
            now=now,
        )
        return CallContext(
            call_id=call.id,
            home_id=home.id,
            address=home.address,
            home_notes=home.notes or "",
            home_phone=(home.phone or "") if sees_health_data(who) else "",
            resident=resident,
            devices=devices,
            trend=trend,
            responders=responders,
            map=MapData(
                home={"id": home.id, "lat": home.lat, "lon": home.lon, "address": home.address},
                target={"lat": call.lat, "lon": call.lon},
                station_id=call.station_id,
                stations=stations,
                area=area,
                limit_min=routing_cfg.limit_min(area),
                reach_km=round(reach_km(routing_cfg, area), 3),
            ),
        )

    @router.get(
        "/calls/{call_id}/candidates",
        response_model=list[CandidateRow],
        responses={409: {"description": "the home's registry data cannot be ranked (reason in detail)"}},
    )
    async def candidates(call_id: int, who: Principal = who_dep) -> list[CandidateRow]:
        """Who to send, nearest first (dispatcher.calls.ranking): the send dialog's list."""
        async with maker() as s:
            call, place = await _place_or_404(s, who, call_id)
            people = await queries.candidate_people(s, who=who, call=call, home=place.home)
        home = place.home
        point = HomePoint(lat=home.lat, lon=home.lon, area=home.area or "urban", station_id=home.station_id)
        try:
            ranked = rank_candidates(point, people, routing_cfg, call_id=call.id)
        except ValueError as exc:
            raise HTTPException(409, f"cannot rank who to send: {exc}") from None
        return [
            CandidateRow(
                staff_id=r.staff_id,
                name=r.name,
                role=r.role,
                phone=r.phone if sees_health_data(who) else mask_number(r.phone),
                station_id=r.station_id,
                station_name=r.station_name,
                distance_m=r.distance_m,
                eta_s=r.eta_s,
                state=r.state.value,
                reasons=list(r.reasons),
                call_id=r.call_id,
            )
            for r in ranked[:MAX_CANDIDATES]
        ]

    @router.get("/board", response_model=list[BoardRow])
    async def board(who: Principal = who_dep) -> list[BoardRow]:
        """Every station in scope: staff on duty, how many are out on a call, open calls."""
        async with maker() as s:
            return await queries.board_rows(s, scope=who.scope)

    return router


async def _place_or_404(s: AsyncSession, who: Principal, call_id: int) -> tuple[Call, queries.CallPlace]:
    """The call and its home, if ``who`` sees the call (dispatcher.calls.visibility)."""
    call, place = await queries.call_place(s, call_id=call_id)
    if call is None or not await call_visible(s, scope=who.scope, call_id=call_id):
        raise HTTPException(404, "no such call")
    if place is None:
        raise HTTPException(404, "the call's home no longer exists")
    return call, place

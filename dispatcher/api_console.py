"""Read endpoints shaped for the operator console, under ``/api/v1/console``.

The calls API answers "what is the call"; an operator at 3 a.m. also needs "who is this,
whom do I ring, which sensor fired, what were the vital signs, who can I send, where is
it" in one request, so the detail pane fills at once instead of after six round trips.
Everything here is read-only and scoped like the rest of the API (outside the caller's
subtree is a 404).

Vital-sign trend: the gateway keeps one hr/rr point a minute per device for the last
three hours (``device_state.vitals_trend``); the trend merges those with the hr/rr values
of the home's recent events (``vital_alert`` from a device or the gateway's rules) and the
latest reading.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from device_gateway.rules import RulesConfig
from dispatcher.auth import Principal, TokenSigner, current_principal, in_scope, station_subtree
from dispatcher.calls import OUTCOMES, DispatchContext
from dispatcher.models import (
    OPEN_STATUSES,
    Assignment,
    Call,
    CallEvent,
    Device,
    DeviceEvent,
    DeviceState,
    Home,
    Resident,
    Staff,
    Station,
    User,
)
from dispatcher.routing import RoutingConfig

DEFAULT_TZ = "Asia/Shanghai"
TREND_WINDOW = timedelta(hours=12)
TREND_MAX_POINTS = 180
RESPONDER_ROLES = ("responder", "nurse", "doctor")
OPEN = [s.value for s in OPEN_STATUSES]


class StationBrief(BaseModel):
    id: str
    name: str
    tier: str
    timezone: str


class ConsoleMe(BaseModel):
    username: str
    display_name: str
    role: str
    locale: str
    station: StationBrief | None
    timezone: str
    outcomes: list[str]
    # An optional tile server for a base map ({z}/{x}/{y}); None = the map is drawn alone.
    tile_url: str | None


class ContactInfo(BaseModel):
    name: str
    relation: str
    phone: str
    priority: int


class ResidentInfo(BaseModel):
    id: str
    name: str
    sex: str
    age: int
    birth_date: date
    capacity_level: int
    living_alone: bool
    conditions: list[str]
    notes: str
    hr_range: tuple[int, int]
    rr_range: tuple[int, int]
    contacts: list[ContactInfo]


class DeviceInfo(BaseModel):
    id: str
    kind: str
    model: str
    enabled: bool
    online: bool | None
    battery_pct: float | None
    last_seen_at: datetime | None
    fired: bool
    # which sensor behind a hub fired, when the device said
    fired_sensors: list[str]
    metrics: dict[str, Any]
    metrics_at: datetime | None


class TrendPoint(BaseModel):
    at: datetime
    hr: float | None
    rr: float | None
    source: str  # "telemetry" (per-minute history), "event" (a vital alert) or "latest"


class ResponderState(BaseModel):
    staff_id: str
    name: str
    role: str
    phone: str
    station_id: str
    station_name: str
    # free, or the assignment state (dispatched, en_route, on_scene) …
    state: str
    # … on which call (None when free)
    call_id: int | None


class MapStation(BaseModel):
    id: str
    name: str
    tier: str
    lat: float
    lon: float


class MapData(BaseModel):
    home: dict[str, Any]
    target: dict[str, float]  # where help must go: the home, or where a watch said
    station_id: str | None
    stations: list[MapStation]
    area: str
    limit_min: float
    # the service circle as a straight-line radius: limit × speed ÷ road factor
    reach_km: float


class CallContext(BaseModel):
    call_id: int
    home_id: str
    address: str
    home_notes: str
    resident: ResidentInfo | None
    devices: list[DeviceInfo]
    trend: list[TrendPoint]
    responders: list[ResponderState]
    map: MapData


class BoardRow(BaseModel):
    id: str
    name: str
    tier: str
    parent_id: str | None
    staff_on_duty: int
    busy: int
    free: int
    open_calls: int


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TZ)


def age_on(birth: date, today: date) -> int:
    """Whole years, the way an ID card is read (birthday not yet reached: one less)."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def reach_km(cfg: RoutingConfig, area: str) -> float:
    """The straight-line radius a responder covers within the service circle; the inverse
    of ``routing.travel_minutes``, so the drawn circle matches how calls are routed."""
    speed = cfg.rural_speed_kmh if area == "rural" else cfg.urban_speed_kmh
    return cfg.limit_min(area) * speed / 60.0 / cfg.road_factor


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


async def resident_briefs(session: AsyncSession, resident_ids: set[str]) -> dict[str, dict[str, Any]]:
    """What the queue row shows about each resident (age, capacity, living alone), so an
    operator sees at a glance who is in trouble without opening the call."""
    if not resident_ids:
        return {}
    today = datetime.now(ZoneInfo(DEFAULT_TZ)).date()
    rows = (await session.scalars(select(Resident).where(Resident.id.in_(sorted(resident_ids))))).all()
    return {
        r.id: {
            "age": age_on(r.birth_date, today),
            "sex": r.sex,
            "capacity_level": r.capacity_level,
            "living_alone": r.living_alone,
        }
        for r in rows
    }


def trend_points(
    events: list[tuple[datetime, dict[str, Any]]],
    latest: list[tuple[datetime | None, dict[str, Any]]],
    history: list[list[float | None]] | None = None,
) -> list[TrendPoint]:
    """hr/rr points in time order from the per-minute history, events' data and the latest
    readings; readings without either value are left out, only the newest
    ``TREND_MAX_POINTS`` kept."""
    pts: list[TrendPoint] = []
    for point in history or []:
        if len(point) == 3 and point[0] is not None and (point[1] is not None or point[2] is not None):
            at = datetime.fromtimestamp(point[0] / 1000, tz=UTC)
            pts.append(TrendPoint(at=at, hr=point[1], rr=point[2], source="telemetry"))
    for at, data in events:
        hr, rr = _num(data.get("hr")), _num(data.get("rr"))
        if hr is not None or rr is not None:
            pts.append(TrendPoint(at=_aware(at) or at, hr=hr, rr=rr, source="event"))
    for seen_at, metrics in latest:
        if seen_at is None:
            continue
        at = seen_at
        hr, rr = _num(metrics.get("hr")), _num(metrics.get("rr"))
        if hr is not None or rr is not None:
            pts.append(TrendPoint(at=_aware(at) or at, hr=hr, rr=rr, source="latest"))
    pts.sort(key=lambda p: p.at)
    return pts[-TREND_MAX_POINTS:]


def console_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    ctx: DispatchContext | None = None,
    rules: RulesConfig | None = None,
    tile_url: str | None = None,
) -> APIRouter:
    """``/api/v1/console/me``, ``/calls/{id}/context`` and ``/board``."""
    router = APIRouter(prefix="/api/v1/console", tags=["console"])
    who_dep = Depends(current_principal(maker, signer))
    the_rules = rules or RulesConfig()
    routing_cfg = ctx.dispatch_cfg.routing if ctx is not None else RoutingConfig()

    @router.get("/me", response_model=ConsoleMe)
    async def me(who: Principal = who_dep) -> ConsoleMe:
        """Who is signed in, where, in which time zone: the console's header and clocks."""
        async with maker() as s:
            user = await s.get(User, who.user_id)
            st = await s.get(Station, who.station_id) if who.station_id else None
        brief = StationBrief(id=st.id, name=st.name, tier=st.tier, timezone=st.timezone) if st else None
        return ConsoleMe(
            username=who.username,
            display_name=who.display_name,
            role=who.role.value,
            locale=user.locale if user else "zh-CN",
            station=brief,
            timezone=str(_zone(st.timezone if st else None)),
            outcomes=list(OUTCOMES),
            tile_url=tile_url,
        )

    @router.get("/calls/{call_id}/context", response_model=CallContext)
    async def call_context(call_id: int, who: Principal = who_dep) -> CallContext:
        async with maker() as s:
            call = await s.get(Call, call_id)
            if call is None or not in_scope(who, call.station_id):
                raise HTTPException(404, "no such call")
            home = await s.get(Home, call.home_id)
            if home is None:
                raise HTTPException(404, "the call's home no longer exists")
            station = await s.get(Station, call.station_id) if call.station_id else None
            tz = _zone(station.timezone if station else None)
            resident = await _resident(s, call.resident_id, tz)
            devices, latest = await _devices(s, call)
            since = datetime.now(UTC) - TREND_WINDOW
            own_events = select(CallEvent.event_pk).where(CallEvent.call_id == call.id)
            events = [
                (at, dict(data or {}))
                for at, data in (
                    await s.execute(
                        select(DeviceEvent.received_at, DeviceEvent.data)
                        .where(
                            DeviceEvent.home_id == home.id,
                            or_(DeviceEvent.received_at >= since, DeviceEvent.id.in_(own_events)),
                        )
                        .order_by(DeviceEvent.id.desc())
                        .limit(200)
                    )
                ).all()
            ]
            responders = await _responders(s, who, call, home)
            stations = await _map_stations(s, who, call, home)
            history: list[list[float | None]] = []
            for trend_ in await s.scalars(
                select(DeviceState.vitals_trend)
                .join(Device, Device.id == DeviceState.device_id)
                .where(Device.home_id == home.id, DeviceState.vitals_trend.is_not(None))
            ):
                history.extend(trend_ or [])
        trend = trend_points(events, latest, history)
        area = home.area or "urban"
        return CallContext(
            call_id=call.id,
            home_id=home.id,
            address=home.address,
            home_notes=home.notes or "",
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

    async def _resident(s: AsyncSession, resident_id: str | None, tz: ZoneInfo) -> ResidentInfo | None:
        if resident_id is None:
            return None
        r = (
            await s.scalars(
                select(Resident).where(Resident.id == resident_id).options(selectinload(Resident.contacts))
            )
        ).first()
        if r is None:
            return None
        band = the_rules.vitals.levels.get(r.capacity_level) or the_rules.vitals.levels[0]
        return ResidentInfo(
            id=r.id,
            name=r.name,
            sex=r.sex,
            age=age_on(r.birth_date, datetime.now(tz).date()),
            birth_date=r.birth_date,
            capacity_level=r.capacity_level,
            living_alone=r.living_alone,
            conditions=list(r.conditions or []),
            notes=r.notes or "",
            hr_range=(r.hr_min or band.hr.min, r.hr_max or band.hr.max),
            rr_range=(r.rr_min or band.rr.min, r.rr_max or band.rr.max),
            contacts=[
                ContactInfo(name=c.name, relation=c.relation, phone=c.phone, priority=c.priority)
                for c in sorted(r.contacts, key=lambda c: c.priority)
            ],
        )

    async def _devices(
        s: AsyncSession, call: Call
    ) -> tuple[list[DeviceInfo], list[tuple[datetime | None, dict[str, Any]]]]:
        fired: dict[str, list[str]] = {}
        for dev_id, sensor in (
            await s.execute(
                select(DeviceEvent.device_id, DeviceEvent.sensor)
                .join(CallEvent, CallEvent.event_pk == DeviceEvent.id)
                .where(CallEvent.call_id == call.id)
            )
        ).all():
            lst = fired.setdefault(dev_id, [])
            if sensor and sensor not in lst:
                lst.append(sensor)
        rows = (
            await s.execute(
                select(Device, DeviceState)
                .outerjoin(DeviceState, DeviceState.device_id == Device.id)
                .where(Device.home_id == call.home_id)
                .order_by(Device.id)
            )
        ).all()
        out: list[DeviceInfo] = []
        latest: list[tuple[datetime | None, dict[str, Any]]] = []
        for d, st in rows:
            metrics = dict(st.metrics or {}) if st is not None else {}
            metrics_at = _aware(st.metrics_at) if st is not None else None
            latest.append((metrics_at, metrics))
            out.append(
                DeviceInfo(
                    id=d.id,
                    kind=d.kind,
                    model=d.model or "",
                    enabled=d.enabled,
                    online=st.online if st is not None and st.last_seen_at is not None else None,
                    battery_pct=st.battery_pct if st is not None else None,
                    last_seen_at=_aware(st.last_seen_at) if st is not None else None,
                    fired=d.id in fired,
                    fired_sensors=fired.get(d.id, []),
                    metrics=metrics,
                    metrics_at=metrics_at,
                )
            )
        return out, latest

    async def _responders(s: AsyncSession, who: Principal, call: Call, home: Home) -> list[ResponderState]:
        """On-duty responders who could go: the call's station and the stations under it
        (a street centre sends from its communities), plus the home's own station, and
        anyone already on this call; never staff outside the caller's scope."""
        stations: set[str] = {home.station_id}
        if call.station_id:
            stations |= await station_subtree(s, call.station_id)
        if who.scope is not None:
            stations &= who.scope
        rows = (
            await s.execute(
                select(Staff, Station.name)
                .join(Station, Station.id == Staff.station_id)
                .where(Staff.station_id.in_(sorted(stations)), Staff.role.in_(RESPONDER_ROLES))
                .order_by(Staff.station_id, Staff.id)
            )
        ).all()
        busy = {
            a.staff_id: a
            for a in (
                await s.scalars(
                    select(Assignment).where(
                        Assignment.active.is_(True),
                        Assignment.staff_id.in_([st.id for st, _ in rows]),
                    )
                )
            ).all()
        }
        out: list[ResponderState] = []
        for st, station_name in rows:
            a = busy.get(st.id)
            if not st.on_duty and (a is None or a.call_id != call.id):
                continue
            out.append(
                ResponderState(
                    staff_id=st.id,
                    name=st.name,
                    role=st.role,
                    phone=st.phone,
                    station_id=st.station_id,
                    station_name=station_name,
                    state=a.state if a is not None else "free",
                    call_id=a.call_id if a is not None else None,
                )
            )
        # the call's own station first, then free before busy
        own = call.station_id
        out.sort(key=lambda r: (r.station_id != own, r.state != "free", r.station_id, r.staff_id))
        return out

    async def _map_stations(s: AsyncSession, who: Principal, call: Call, home: Home) -> list[MapStation]:
        """Stations near enough to matter on one screen: the call's station, the home's,
        and their parents and children, within the caller's scope."""
        ids = {i for i in (call.station_id, home.station_id) if i}
        parents = set(await s.scalars(select(Station.parent_id).where(Station.id.in_(sorted(ids)))))
        ids |= {p for p in parents if p}
        ids |= set(await s.scalars(select(Station.id).where(Station.parent_id.in_(sorted(ids)))))
        if who.scope is not None:
            ids &= who.scope
        rows = (
            await s.scalars(select(Station).where(Station.id.in_(sorted(ids))).order_by(Station.id))
        ).all()
        return [MapStation(id=r.id, name=r.name, tier=r.tier, lat=r.lat, lon=r.lon) for r in rows]

    @router.get("/board", response_model=list[BoardRow])
    async def board(who: Principal = who_dep) -> list[BoardRow]:
        """Every station in scope: staff on duty, how many are out on a call, open calls."""
        async with maker() as s:
            stmt = select(Station).order_by(Station.tier, Station.id)
            if who.scope is not None:
                stmt = stmt.where(Station.id.in_(sorted(who.scope)))
            stations = (await s.scalars(stmt)).all()
            on_duty = dict(
                (
                    await s.execute(
                        select(Staff.station_id, func.count())
                        .where(Staff.on_duty.is_(True), Staff.role.in_(RESPONDER_ROLES))
                        .group_by(Staff.station_id)
                    )
                ).all()
            )
            busy = dict(
                (
                    await s.execute(
                        select(Staff.station_id, func.count(func.distinct(Staff.id)))
                        .join(Assignment, Assignment.staff_id == Staff.id)
                        .where(Assignment.active.is_(True))
                        .group_by(Staff.station_id)
                    )
                ).all()
            )
            open_calls = dict(
                (
                    await s.execute(
                        select(Call.station_id, func.count())
                        .where(Call.status.in_(OPEN))
                        .group_by(Call.station_id)
                    )
                ).all()
            )
        tier_order = {"county": 0, "street": 1, "community": 2}
        rows = [
            BoardRow(
                id=st.id,
                name=st.name,
                tier=st.tier,
                parent_id=st.parent_id,
                staff_on_duty=int(on_duty.get(st.id, 0)),
                busy=int(busy.get(st.id, 0)),
                free=max(0, int(on_duty.get(st.id, 0)) - int(busy.get(st.id, 0))),
                open_calls=int(open_calls.get(st.id, 0)),
            )
            for st in stations
        ]
        rows.sort(key=lambda r: (-r.open_calls, tier_order.get(r.tier, 3), r.id))
        return rows

    return router

"""The console's reads from the database: the detail pane of a call (resident, devices,
events, responders, nearby stations), the station board, the queue's resident briefs,
and what the live stream needs (the audit head, calls changed since, open calls in scope).

Everything here is read-only; scope is applied by the caller's ``Principal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from carecall.core.one_of import one_of
from device_gateway.models import Device, DeviceEvent, DeviceState
from device_gateway.rules import RulesConfig
from dispatcher.audit.models import AuditRow
from dispatcher.auth.models import User
from dispatcher.auth.principals import Principal, station_subtree
from dispatcher.calls.models import OPEN_STATUSES, Assignment, Call, CallEvent
from dispatcher.calls.ranking import Candidate
from dispatcher.calls.visibility import visible_calls
from dispatcher.console.detail import DEFAULT_TZ, age_on, aware
from dispatcher.console.schemas import (
    BoardRow,
    ContactInfo,
    DeviceInfo,
    MapStation,
    ResidentInfo,
    ResponderState,
)
from dispatcher.incidents.models import IncidentDevice, MassOfflineIncident
from dispatcher.registry.models import Home, Resident, Staff, Station

RESPONDER_ROLES = ("responder", "nurse", "doctor")
OPEN = [s.value for s in OPEN_STATUSES]
# How the board orders station tiers (county first).
TIER_ORDER = {"county": 0, "street": 1, "community": 2}


# =========================================================================== who and where


async def user_and_station(
    session: AsyncSession, *, user_id: int, station_id: str | None
) -> tuple[User | None, Station | None]:
    """The signed-in user's row and station (None when they have none)."""
    user = await session.get(User, user_id)
    station = await session.get(Station, station_id) if station_id else None
    return user, station


async def resident_briefs(
    session: AsyncSession, *, resident_ids: set[str], now: datetime
) -> dict[str, dict[str, Any]]:
    """What the queue row shows about each resident (age, capacity, living alone), so an
    operator sees at a glance who is in trouble without opening the call."""
    if not resident_ids:
        return {}
    today = now.astimezone(ZoneInfo(DEFAULT_TZ)).date()
    rows = (await session.scalars(select(Resident).where(one_of(Resident.id, sorted(resident_ids))))).all()
    return {
        r.id: {
            "age": age_on(r.birth_date, today),
            "sex": r.sex,
            "capacity_level": r.capacity_level,
            "living_alone": r.living_alone,
        }
        for r in rows
    }


# =========================================================================== a call's detail pane


@dataclass(frozen=True)
class CallPlace:
    """A call, its home and the station it is at (None: not routed to one)."""

    call: Call
    home: Home
    station: Station | None


async def call_place(session: AsyncSession, *, call_id: int) -> tuple[Call | None, CallPlace | None]:
    """The call (None if unknown) and, when its home still exists, where it is."""
    call = await session.get(Call, call_id)
    if call is None:
        return None, None
    home = await session.get(Home, call.home_id)
    if home is None:
        return call, None
    station = await session.get(Station, call.station_id) if call.station_id else None
    return call, CallPlace(call=call, home=home, station=station)


async def resident_info(
    session: AsyncSession, *, resident_id: str | None, rules: RulesConfig, today: date
) -> ResidentInfo | None:
    """The resident with contacts (by priority) and the vital-sign ranges that apply."""
    if resident_id is None:
        return None
    r = (
        await session.scalars(
            select(Resident).where(Resident.id == resident_id).options(selectinload(Resident.contacts))
        )
    ).first()
    if r is None:
        return None
    band = rules.vitals.levels.get(r.capacity_level) or rules.vitals.levels[0]
    return ResidentInfo(
        id=r.id,
        name=r.name,
        sex=r.sex,
        age=age_on(r.birth_date, today),
        birth_date=r.birth_date,
        capacity_level=r.capacity_level,
        living_alone=r.living_alone,
        conditions=list(r.conditions or []),
        notes=r.notes or "",
        phone=r.phone or "",
        medications=r.medications or "",
        allergies=r.allergies or "",
        access_notes=r.access_notes or "",
        hr_range=(r.hr_min or band.hr.min, r.hr_max or band.hr.max),
        rr_range=(r.rr_min or band.rr.min, r.rr_max or band.rr.max),
        contacts=[
            ContactInfo(name=c.name, relation=c.relation, phone=c.phone, priority=c.priority)
            for c in sorted(r.contacts, key=lambda c: c.priority)
        ],
    )


async def home_devices(
    session: AsyncSession, *, call: Call
) -> tuple[list[DeviceInfo], list[tuple[datetime | None, dict[str, Any]]]]:
    """The home's devices (which of them fired for this call, and which sensor) and
    their latest readings."""
    fired: dict[str, list[str]] = {}
    for dev_id, sensor in (
        await session.execute(
            select(DeviceEvent.device_id, DeviceEvent.sensor)
            .join(CallEvent, CallEvent.event_pk == DeviceEvent.id)
            .where(CallEvent.call_id == call.id)
        )
    ).all():
        lst = fired.setdefault(dev_id, [])
        if sensor and sensor not in lst:
            lst.append(sensor)
    rows = (
        await session.execute(
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
        metrics_at = aware(st.metrics_at) if st is not None else None
        latest.append((metrics_at, metrics))
        out.append(
            DeviceInfo(
                id=d.id,
                kind=d.kind,
                model=d.model or "",
                enabled=d.enabled,
                online=st.online if st is not None and st.last_seen_at is not None else None,
                battery_pct=st.battery_pct if st is not None else None,
                last_seen_at=aware(st.last_seen_at) if st is not None else None,
                fired=d.id in fired,
                fired_sensors=fired.get(d.id, []),
                metrics=metrics,
                metrics_at=metrics_at,
            )
        )
    return out, latest


async def home_events(
    session: AsyncSession, *, home_id: str, call_id: int, since: datetime
) -> list[tuple[datetime, dict[str, Any]]]:
    """(received at, data) of the home's events since ``since`` and of the call's own
    events, newest first, at most 200."""
    own_events = select(CallEvent.event_pk).where(CallEvent.call_id == call_id)
    return [
        (at, dict(data or {}))
        for at, data in (
            await session.execute(
                select(DeviceEvent.received_at, DeviceEvent.data)
                .where(
                    DeviceEvent.home_id == home_id,
                    or_(DeviceEvent.received_at >= since, DeviceEvent.id.in_(own_events)),
                )
                .order_by(DeviceEvent.id.desc())
                .limit(200)
            )
        ).all()
    ]


async def vitals_history(session: AsyncSession, *, home_id: str) -> list[list[float | None]]:
    """The per-minute hr/rr points the gateway kept for the home's devices."""
    history: list[list[float | None]] = []
    for trend_ in await session.scalars(
        select(DeviceState.vitals_trend)
        .join(Device, Device.id == DeviceState.device_id)
        .where(Device.home_id == home_id, DeviceState.vitals_trend.is_not(None))
    ):
        history.extend(trend_ or [])
    return history


async def responders(
    session: AsyncSession, *, who: Principal, call: Call, home: Home
) -> list[ResponderState]:
    """On-duty responders who could go: the call's station and the stations under it
    (a street centre sends from its communities), plus the home's own station, and
    anyone already on this call; never staff outside the caller's scope."""
    stations: set[str] = {home.station_id}
    if call.station_id:
        stations |= await station_subtree(session, station_id=call.station_id)
    if who.scope is not None:
        stations &= who.scope
    rows = (
        await session.execute(
            select(Staff, Station.name)
            .join(Station, Station.id == Staff.station_id)
            .where(one_of(Staff.station_id, sorted(stations)), Staff.role.in_(RESPONDER_ROLES))
            .order_by(Staff.station_id, Staff.id)
        )
    ).all()
    busy = {
        a.staff_id: a
        for a in (
            await session.scalars(
                select(Assignment).where(
                    Assignment.active.is_(True),
                    one_of(Assignment.staff_id, [st.id for st, _ in rows]),
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


async def candidate_people(
    session: AsyncSession, *, who: Principal, call: Call, home: Home
) -> list[Candidate]:
    """Everyone who could be sent (dispatcher.calls.ranking), on duty or not: the
    responders of the stations ``responders`` draws from, with their station's position
    and what they are doing; never staff outside the caller's scope."""
    stations: set[str] = {home.station_id}
    if call.station_id:
        stations |= await station_subtree(session, station_id=call.station_id)
    if who.scope is not None:
        stations &= who.scope
    rows = (
        await session.execute(
            select(Staff, Station)
            .join(Station, Station.id == Staff.station_id)
            .where(one_of(Staff.station_id, sorted(stations)), Staff.role.in_(RESPONDER_ROLES))
        )
    ).all()
    on_call = dict(
        (
            await session.execute(
                select(Assignment.staff_id, func.min(Assignment.call_id))
                .where(Assignment.active.is_(True), one_of(Assignment.staff_id, [st.id for st, _ in rows]))
                .group_by(Assignment.staff_id)
            )
        ).all()
    )
    return [
        Candidate(
            staff_id=st.id,
            name=st.name,
            role=st.role,
            phone=st.phone,
            station_id=station.id,
            station_name=station.name,
            lat=station.lat,
            lon=station.lon,
            on_duty=st.on_duty,
            marked_busy=st.busy,
            call_id=on_call.get(st.id),
        )
        for st, station in rows
    ]


async def map_stations(session: AsyncSession, *, who: Principal, call: Call, home: Home) -> list[MapStation]:
    """Stations near enough to matter on one screen: the call's station, the home's,
    and their parents and children, within the caller's scope."""
    ids = {i for i in (call.station_id, home.station_id) if i}
    parents = set(await session.scalars(select(Station.parent_id).where(one_of(Station.id, sorted(ids)))))
    ids |= {p for p in parents if p}
    ids |= set(await session.scalars(select(Station.id).where(one_of(Station.parent_id, sorted(ids)))))
    if who.scope is not None:
        ids &= who.scope
    rows = (
        await session.scalars(select(Station).where(one_of(Station.id, sorted(ids))).order_by(Station.id))
    ).all()
    return [MapStation(id=r.id, name=r.name, tier=r.tier, lat=r.lat, lon=r.lon) for r in rows]


# =========================================================================== the board


async def board_rows(session: AsyncSession, *, scope: frozenset[str] | None) -> list[BoardRow]:
    """Every station in ``scope`` (None: all): staff on duty, how many are out on a call,
    open calls; busiest first."""
    stmt = select(Station).order_by(Station.tier, Station.id)
    if scope is not None:
        stmt = stmt.where(one_of(Station.id, sorted(scope)))
    stations = (await session.scalars(stmt)).all()
    on_duty = dict(
        (
            await session.execute(
                select(Staff.station_id, func.count())
                .where(Staff.on_duty.is_(True), Staff.role.in_(RESPONDER_ROLES))
                .group_by(Staff.station_id)
            )
        ).all()
    )
    busy = dict(
        (
            await session.execute(
                select(Staff.station_id, func.count(func.distinct(Staff.id)))
                .join(Assignment, Assignment.staff_id == Staff.id)
                .where(Assignment.active.is_(True))
                .group_by(Staff.station_id)
            )
        ).all()
    )
    open_calls = dict(
        (
            await session.execute(
                select(Call.station_id, func.count()).where(Call.status.in_(OPEN)).group_by(Call.station_id)
            )
        ).all()
    )
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
    rows.sort(key=lambda r: (-r.open_calls, TIER_ORDER.get(r.tier, 3), r.id))
    return rows


# =========================================================================== the live stream


async def head_seq(session: AsyncSession) -> int:
    """The audit log's newest sequence number (0 when empty)."""
    return int(await session.scalar(select(func.coalesce(func.max(AuditRow.seq), 0))) or 0)


async def calls_changed_since(session: AsyncSession, *, seq: int, limit: int) -> set[int]:
    """Ids of calls with an audit row after ``seq`` (at most ``limit``)."""
    touched = await session.scalars(
        select(AuditRow.call_id)
        .where(AuditRow.seq > seq, AuditRow.call_id.is_not(None))
        .distinct()
        .limit(limit)
    )
    return {c for c in touched if c is not None}


async def scoped_ids(session: AsyncSession, *, who: Principal, ids: set[int]) -> tuple[list[int], list[int]]:
    """Split call ids into (visible to ``who``, not visible): dispatcher.calls.visibility."""
    if not ids:
        return [], []
    seen = set(
        await session.scalars(select(Call.id).where(one_of(Call.id, sorted(ids)), visible_calls(who.scope)))
    )
    return sorted(seen), sorted(ids - seen)


async def open_call_ids(session: AsyncSession, *, who: Principal, limit: int = 500) -> list[int]:
    """Open calls in ``who``'s scope, most urgent first."""
    stmt = select(Call.id).where(Call.status.in_(OPEN), visible_calls(who.scope))
    return list(await session.scalars(stmt.order_by(Call.priority, Call.id).limit(limit)))


# =========================================================================== the queue's incident lines

# The homes listed under one incident line in the queue; the count is always the full one.
INCIDENT_ITEMS_MAX = 500


async def incident_briefs(session: AsyncSession, *, call_ids: set[int]) -> dict[int, dict[str, Any]]:
    """What the queue's incident line shows for each mass offline incident among
    ``call_ids`` (calls of other classes are absent): the area, the cause, how many
    devices went and how many are back, and the devices still offline with their home's
    address (at most ``INCIDENT_ITEMS_MAX``), so the operator can search and expand one
    line instead of scrolling a card per home."""
    if not call_ids:
        return {}
    ids = sorted(call_ids)
    incidents = (
        await session.execute(
            select(MassOfflineIncident, Station.name)
            .join(Station, Station.id == MassOfflineIncident.area_station_id)
            .where(one_of(MassOfflineIncident.call_id, ids))
        )
    ).all()
    if not incidents:
        return {}
    out: dict[int, dict[str, Any]] = {
        inc.call_id: {
            "area_station_id": inc.area_station_id,
            "area_name": area_name,
            "cause": inc.cause,
            "devices": 0,
            "back": 0,
            "items": [],
        }
        for inc, area_name in incidents
    }
    rows = (
        await session.execute(
            select(
                IncidentDevice.call_id,
                IncidentDevice.device_id,
                IncidentDevice.home_id,
                IncidentDevice.back_at,
                Home.address,
            )
            .outerjoin(Home, Home.id == IncidentDevice.home_id)
            .where(one_of(IncidentDevice.call_id, sorted(out)))
            .order_by(IncidentDevice.call_id, IncidentDevice.home_id, IncidentDevice.device_id)
        )
    ).all()
    for call_id, device_id, home_id, back_at, address in rows:
        brief = out[call_id]
        brief["devices"] += 1
        if back_at is not None:
            brief["back"] += 1
        elif len(brief["items"]) < INCIDENT_ITEMS_MAX:
            brief["items"].append({"device_id": device_id, "home_id": home_id, "address": address or ""})
    return out

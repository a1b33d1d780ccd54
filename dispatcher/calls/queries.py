"""Reading calls: what routing needs (stations with responders free, a home's recent
calls), what the HTTP views show (the queue, one call's timeline and responders, the
items set aside as "could not be processed"), and response times derived from the audit
log (never stored on the call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.one_of import one_of
from device_gateway.models import DeviceEvent
from dispatcher.audit.chain import AuditKind
from dispatcher.audit.models import AuditRow
from dispatcher.calls import escalation as esc
from dispatcher.calls import routing
from dispatcher.calls.context import Batch
from dispatcher.calls.lifecycle import CLOSED_STATUSES, OPEN_STATUSES
from dispatcher.calls.models import (
    Assignment,
    Call,
    CallEvent,
    FailureKind,
    IntakeFailure,
    Timer,
    TimerStatus,
)
from dispatcher.calls.paging import PageOut
from dispatcher.calls.visibility import visible_calls
from dispatcher.registry.models import Home, Resident, Staff, Station

# --------------------------------------------------------------------------- routing's reads


async def station_nodes(session: AsyncSession, *, batch: Batch) -> dict[str, routing.StationNode]:
    """Every station with its count of on-duty responders not busy on a call, read once
    per batch (staffing does not change inside one)."""
    if batch.stations is None:
        batch.stations = await _load_station_nodes(session)
    return batch.stations


async def _load_station_nodes(session: AsyncSession) -> dict[str, routing.StationNode]:
    busy = select(Assignment.staff_id).where(Assignment.active.is_(True))
    free = (
        select(Staff.station_id.label("station_id"), func.count().label("n"))
        .where(
            Staff.on_duty.is_(True),
            Staff.role.in_(("responder", "nurse", "doctor")),
            Staff.id.not_in(busy),
        )
        .group_by(Staff.station_id)
        .subquery()
    )
    # one statement: the stations with their free responders counted; columns, not
    # Station objects (every intake round reads them all: object set-up was a third of
    # the batch reads' samples in the bench's quiet phase)
    rows = (
        await session.execute(
            select(
                Station.id,
                Station.name,
                Station.tier,
                Station.parent_id,
                Station.lat,
                Station.lon,
                Station.area,
                free.c.n,
            ).outerjoin(free, free.c.station_id == Station.id)
        )
    ).all()
    return {
        s.id: routing.station_node(
            id=s.id,
            name=s.name,
            tier=s.tier,
            parent_id=s.parent_id,
            lat=s.lat,
            lon=s.lon,
            area=s.area,
            on_duty_responders=int(s.n or 0),
        )
        for s in rows
    }


async def recent_calls(session: AsyncSession, *, home_id: str, batch: Batch, now: datetime) -> int:
    """Calls of this home opened in the last 24 h (from the audit log), counted once per
    batch and home; the batch adds the calls it opens (a storm joins many events per home)."""
    if home_id not in batch.recent_calls:
        counts = await count_recent_calls(session, home_ids=[home_id], now=now)
        batch.recent_calls[home_id] = counts[home_id]
    return batch.recent_calls[home_id]


async def count_recent_calls(
    session: AsyncSession, *, home_ids: Sequence[str], now: datetime
) -> dict[str, int]:
    """Calls opened in the last 24 h per home (every home given, 0 when none), in one query.

    Driven from these homes' calls (ix_calls_home_status), each probed for its
    ``call_opened`` row by a subquery with LIMIT 1 (ix_audit_log_call_marks), which the
    planner cannot turn into a join: the cost grows with these homes' calls only. As a
    join (or EXISTS), on a table whose statistics lag its growth (a new installation's
    first hour, the bench's every run), PostgreSQL hashed every call opened anywhere in
    the last 24 h first — 8.6–11 ms per intake round after the bench's 7,000 calls
    (EXPLAIN ANALYZE, 2026-12-07), PostgreSQL CPU that every other process waited for."""
    opened = (
        select(AuditRow.id)
        .where(
            AuditRow.call_id == Call.id,
            AuditRow.kind == AuditKind.call_opened.value,
            AuditRow.at >= now - timedelta(hours=24),
        )
        .limit(1)
        .scalar_subquery()
    )
    counts = dict(
        (
            await session.execute(
                select(Call.home_id, func.count())
                .where(one_of(Call.home_id, list(home_ids)), opened.is_not(None))
                .group_by(Call.home_id)
            )
        ).all()
    )
    return {h: int(counts.get(h, 0)) for h in home_ids}


async def call_device_events(session: AsyncSession, *, call_id: int) -> list[tuple[str, str]]:
    """(device id, event id) of the device events that raised the call: the devices to tell."""
    rows = await session.execute(
        select(DeviceEvent.device_id, DeviceEvent.event_id)
        .join(CallEvent, CallEvent.event_pk == DeviceEvent.id)
        .where(
            CallEvent.call_id == call_id, DeviceEvent.source == "device", DeviceEvent.event_class != "cancel"
        )
    )
    return [(d, e) for d, e in rows.all()]


# --------------------------------------------------------------------------- response times


@dataclass(frozen=True)
class CallTimes:
    opened_at: datetime | None
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    on_scene_at: datetime | None
    resolved_at: datetime | None
    first_event_at: datetime | None
    escalations: int


_TIME_KINDS = {
    AuditKind.call_opened.value: "opened_at",
    AuditKind.acknowledged.value: "acknowledged_at",
    AuditKind.responder_dispatched.value: "dispatched_at",
    AuditKind.on_scene.value: "on_scene_at",
    AuditKind.resolved.value: "resolved_at",
    AuditKind.cancelled.value: "resolved_at",
    AuditKind.restored.value: "resolved_at",
    AuditKind.event_received.value: "first_event_at",
}


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def call_times(session: AsyncSession, *, call_ids: Sequence[int]) -> dict[int, CallTimes]:
    """Response times, derived from the audit rows (never stored on the call)."""
    if not call_ids:
        return {}
    rows = await session.execute(
        select(AuditRow.call_id, AuditRow.kind, func.min(AuditRow.at), func.count())
        .where(
            one_of(AuditRow.call_id, list(call_ids)),
            or_(AuditRow.kind.in_(list(_TIME_KINDS)), AuditRow.kind == AuditKind.escalated.value),
        )
        .group_by(AuditRow.call_id, AuditRow.kind)
    )
    acc: dict[int, dict[str, Any]] = {cid: {"escalations": 0} for cid in call_ids}
    for cid_, kind, first, n in rows.all():
        if cid_ is None:
            continue
        cid = int(cid_)
        if kind == AuditKind.escalated.value:
            acc[cid]["escalations"] = int(n)
            continue
        key = _TIME_KINDS[kind]
        prev = acc[cid].get(key)
        at = _aware(first)
        acc[cid][key] = min(prev, at) if prev else at
    return {
        cid: CallTimes(
            opened_at=v.get("opened_at"),
            acknowledged_at=v.get("acknowledged_at"),
            dispatched_at=v.get("dispatched_at"),
            on_scene_at=v.get("on_scene_at"),
            resolved_at=v.get("resolved_at"),
            first_event_at=v.get("first_event_at"),
            escalations=v["escalations"],
        )
        for cid, v in acc.items()
    }


# --------------------------------------------------------------------------- what the views show


class EventOut(BaseModel):
    device_id: str
    event_id: str
    type: str
    event_class: str
    sensor: str | None
    received_at: datetime
    device_ts: datetime | None
    clock_suspect: bool
    data: dict[str, Any]


class TimelineRow(BaseModel):
    seq: int
    at: datetime
    kind: str
    actor: str
    station_id: str | None
    detail: dict[str, Any]


class ResponderOut(BaseModel):
    staff_id: str
    name: str
    phone: str
    station_id: str
    state: str
    active: bool


class CallOut(BaseModel):
    id: int
    status: str
    priority: str
    priority_reasons: list[str]
    event_class: str
    home_id: str
    resident_id: str | None
    resident_name: str | None = None
    address: str | None = None
    station_id: str | None
    station_name: str | None = None
    tier: str | None
    route_reasons: list[str]
    lat: float
    lon: float
    escalation_level: int
    escalations: int
    version: int
    outcome: str | None
    events: list[EventOut]
    opened_at: datetime | None
    acknowledged_at: datetime | None
    dispatched_at: datetime | None
    on_scene_at: datetime | None
    resolved_at: datetime | None
    next_escalation_at: datetime | None = None


class CallDetail(CallOut):
    timeline: list[TimelineRow]
    responders: list[ResponderOut]
    pages: list[PageOut] = []


QueueFilter = Literal["open", "closed", "all"]


async def queue_ids(
    session: AsyncSession,
    *,
    status: QueueFilter,
    scope: frozenset[str] | None,
    limit: int,
    offset: int,
) -> list[int]:
    """The queue's call ids, most urgent first, that ``scope`` sees (dispatcher.calls.visibility)."""
    stmt = select(Call.id)
    if status == "open":
        stmt = stmt.where(Call.status.in_([s.value for s in OPEN_STATUSES]))
    elif status == "closed":
        stmt = stmt.where(Call.status.in_([s.value for s in CLOSED_STATUSES]))
    stmt = stmt.where(visible_calls(scope))
    stmt = stmt.order_by(Call.priority, Call.id).limit(limit).offset(offset)
    return list(await session.scalars(stmt))


async def staff_stations(session: AsyncSession, *, staff_ids: Sequence[str]) -> dict[str, str]:
    """Staff id -> station id, for the ids that exist."""
    rows = await session.execute(select(Staff.id, Staff.station_id).where(one_of(Staff.id, list(staff_ids))))
    return {staff_id: station_id for staff_id, station_id in rows.all()}


async def _events_of(session: AsyncSession, ids: Sequence[int]) -> dict[int, list[EventOut]]:
    evs = (
        await session.execute(
            select(
                CallEvent.call_id,
                DeviceEvent.device_id,
                DeviceEvent.event_id,
                DeviceEvent.type,
                DeviceEvent.event_class,
                DeviceEvent.sensor,
                DeviceEvent.received_at,
                DeviceEvent.device_ts,
                DeviceEvent.clock_suspect,
                DeviceEvent.data,
            )
            .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
            .where(one_of(CallEvent.call_id, list(ids)))
            .order_by(DeviceEvent.id)
        )
    ).all()
    events: dict[int, list[EventOut]] = {}
    for ev in evs:  # columns, not DeviceEvent objects (see _QUEUE_COLUMNS)
        events.setdefault(ev.call_id, []).append(
            EventOut(
                device_id=ev.device_id,
                event_id=ev.event_id,
                type=ev.type,
                event_class=ev.event_class,
                sensor=ev.sensor,
                received_at=ev.received_at,
                device_ts=ev.device_ts,
                clock_suspect=ev.clock_suspect,
                data=ev.data or {},
            )
        )
    return events


# the steps the queue shows as "next escalation"
_ESCALATIONS = (
    esc.TimerAction.escalate_street,
    esc.TimerAction.escalate_county,
    esc.TimerAction.alert_supervisor,
)


async def _next_escalations(session: AsyncSession, ids: Sequence[int]) -> dict[int, datetime]:
    nxt: dict[int, datetime] = {}
    for cid, at in (
        await session.execute(
            select(Timer.call_id, Timer.due_at).where(
                one_of(Timer.call_id, list(ids)),
                Timer.status == TimerStatus.pending.value,
                Timer.action.in_([a.value for a in _ESCALATIONS]),
            )
        )
    ).all():
        at = _aware(at)
        nxt[cid] = min(nxt.get(cid, at), at)
    return nxt


# The call columns the queue shows: columns, not Call objects (a console frame loaded
# each call as an ORM object, its escalation snapshot decoded, for fifteen of its values;
# object set-up was a fifth of the web server's samples in the bench's quiet phase).
_QUEUE_COLUMNS = (
    Call.id,
    Call.status,
    Call.priority,
    Call.priority_reasons,
    Call.event_class,
    Call.home_id,
    Call.resident_id,
    Call.station_id,
    Call.tier,
    Call.route_reasons,
    Call.lat,
    Call.lon,
    Call.escalation_level,
    Call.version,
    Call.outcome,
)


async def load_calls(
    session: AsyncSession, ids: list[int], *, scope: frozenset[str] | Literal["any"] | None = "any"
) -> list[CallOut]:
    """The calls as the queue shows them, in the order of ``ids`` (missing ones left out;
    with ``scope``, those that scope does not see too: dispatcher.calls.visibility, None
    being the whole county)."""
    if not ids:
        return []
    visible = true() if scope == "any" else visible_calls(scope)
    # the calls with the names the queue shows, in one statement (a console frame's
    # round trips are what its calls wait for on a busy machine: four were one each)
    rows = (
        await session.execute(
            select(
                *_QUEUE_COLUMNS,
                Home.address.label("address"),
                Resident.name.label("resident_name"),
                Station.name.label("station_name"),
            )
            .outerjoin(Home, Home.id == Call.home_id)
            .outerjoin(Resident, Resident.id == Call.resident_id)
            .outerjoin(Station, Station.id == Call.station_id)
            .where(one_of(Call.id, ids), visible)
        )
    ).all()
    by_id = {r.id: r for r in rows}
    present = [cid for cid in ids if cid in by_id]
    if not present:
        return []
    times = await call_times(session, call_ids=present)
    events = await _events_of(session, present)
    nxt = await _next_escalations(session, present)
    out: list[CallOut] = []
    for cid in present:
        c = by_id[cid]
        t = times[cid]
        out.append(
            CallOut(
                id=c.id,
                status=c.status,
                priority=c.priority,
                priority_reasons=list(c.priority_reasons or []),
                event_class=c.event_class,
                home_id=c.home_id,
                resident_id=c.resident_id,
                resident_name=c.resident_name,
                address=c.address,
                station_id=c.station_id,
                station_name=c.station_name,
                tier=c.tier,
                route_reasons=list(c.route_reasons or []),
                lat=c.lat,
                lon=c.lon,
                escalation_level=c.escalation_level,
                escalations=t.escalations,
                version=c.version,
                outcome=c.outcome,
                events=events.get(cid, []),
                opened_at=t.opened_at,
                acknowledged_at=t.acknowledged_at,
                dispatched_at=t.dispatched_at,
                on_scene_at=t.on_scene_at,
                resolved_at=t.resolved_at,
                next_escalation_at=nxt.get(cid),
            )
        )
    return out


async def timeline(session: AsyncSession, *, call_id: int) -> list[TimelineRow]:
    rows = (
        await session.scalars(select(AuditRow).where(AuditRow.call_id == call_id).order_by(AuditRow.seq))
    ).all()
    return [
        TimelineRow(
            seq=r.seq, at=r.at, kind=r.kind, actor=r.actor, station_id=r.station_id, detail=r.detail or {}
        )
        for r in rows
    ]


async def responders(session: AsyncSession, *, call_id: int) -> list[ResponderOut]:
    rows = (
        await session.execute(
            select(Assignment, Staff)
            .join(Staff, Staff.id == Assignment.staff_id)
            .where(Assignment.call_id == call_id)
        )
    ).all()
    return [
        ResponderOut(
            staff_id=st.id,
            name=st.name,
            phone=st.phone,
            station_id=st.station_id,
            state=a.state,
            active=a.active,
        )
        for a, st in rows
    ]


# --------------------------------------------------------------------------- set aside


class FailedEventOut(BaseModel):
    event_pk: int
    device_id: str
    home_id: str | None
    station_id: str | None
    type: str
    event_id: str
    stored_at: datetime
    attempts: int
    error: str
    set_aside_at: datetime


class FailedTimerOut(BaseModel):
    timer_id: int
    call_id: int
    station_id: str | None
    step: int
    action: str
    due_at: datetime
    attempts: int
    error: str
    set_aside_at: datetime


class IntakeFailuresOut(BaseModel):
    events: list[FailedEventOut]
    timers: list[FailedTimerOut]


async def set_aside(session: AsyncSession, *, scope: frozenset[str] | None) -> IntakeFailuresOut:
    """Events and timers set aside as "could not be processed", newest first, with the
    error, within ``scope`` (an event by its home's station, a timer by its call's)."""
    ev_stmt = (
        select(
            IntakeFailure,
            DeviceEvent.device_id,
            DeviceEvent.home_id,
            DeviceEvent.type,
            DeviceEvent.event_id,
            DeviceEvent.received_at,
            Home.station_id,
        )
        .join(DeviceEvent, DeviceEvent.id == IntakeFailure.ref)
        .outerjoin(Home, Home.id == DeviceEvent.home_id)
        .where(IntakeFailure.kind == FailureKind.event.value, IntakeFailure.set_aside_at.is_not(None))
        .order_by(IntakeFailure.set_aside_at.desc(), IntakeFailure.ref.desc())
        .limit(500)
    )
    tm_stmt = (
        select(IntakeFailure, Timer.call_id, Timer.step, Timer.action, Timer.due_at, Call.station_id)
        .join(Timer, Timer.id == IntakeFailure.ref)
        .join(Call, Call.id == Timer.call_id)
        .where(IntakeFailure.kind == FailureKind.timer.value, IntakeFailure.set_aside_at.is_not(None))
        .order_by(IntakeFailure.set_aside_at.desc(), IntakeFailure.ref.desc())
        .limit(500)
    )
    if scope is not None:
        ev_stmt = ev_stmt.where(one_of(Home.station_id, sorted(scope)))
        tm_stmt = tm_stmt.where(one_of(Call.station_id, sorted(scope)))
    ev_rows = (await session.execute(ev_stmt)).all()
    tm_rows = (await session.execute(tm_stmt)).all()
    events = [
        FailedEventOut(
            event_pk=f.ref,
            device_id=device_id,
            home_id=home_id,
            station_id=station_id,
            type=type_,
            event_id=event_id,
            stored_at=stored_at,
            **_why(f),
        )
        for f, device_id, home_id, type_, event_id, stored_at, station_id in ev_rows
    ]
    timers = [
        FailedTimerOut(
            timer_id=f.ref,
            call_id=call_id,
            station_id=station_id,
            step=step,
            action=action,
            due_at=due_at,
            **_why(f),
        )
        for f, call_id, step, action, due_at, station_id in tm_rows
    ]
    return IntakeFailuresOut(events=events, timers=timers)


def _why(f: IntakeFailure) -> dict[str, Any]:
    """What every set-aside item shows: how often it failed, the error, since when."""
    return {"attempts": f.attempts, "error": f.error, "set_aside_at": f.set_aside_at}

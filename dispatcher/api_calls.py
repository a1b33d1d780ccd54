"""Calls over HTTP: the queue, one call with its timeline, and operator actions.

Scope is enforced on every read and write: a call outside the caller's subtree is a 404,
never a 403, so nobody learns it exists. Times are derived from the audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher import calls
from dispatcher.auth import Principal, TokenSigner, current_principal
from dispatcher.clock import Clock
from dispatcher.models import (
    CLOSED_STATUSES,
    OPEN_STATUSES,
    Assignment,
    AuditRow,
    Call,
    CallEvent,
    DeviceEvent,
    Home,
    Resident,
    Staff,
    Station,
    Timer,
)


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


class ActionBody(BaseModel):
    """Action inputs; each action reads the fields it needs."""

    staff_ids: list[str] | None = None
    outcome: str | None = None
    note: str | None = Field(default=None, max_length=4000)
    text: str | None = Field(default=None, max_length=4000)
    to: str | None = None
    false_alarm: bool | None = None
    expected_version: int | None = None


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


async def load_calls(session: AsyncSession, ids: list[int]) -> list[CallOut]:
    if not ids:
        return []
    rows = (await session.scalars(select(Call).where(Call.id.in_(ids)))).all()
    by_id = {c.id: c for c in rows}
    times = await calls.call_times(session, ids)
    evs = (
        await session.execute(
            select(CallEvent.call_id, DeviceEvent)
            .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
            .where(CallEvent.call_id.in_(ids))
            .order_by(DeviceEvent.id)
        )
    ).all()
    events: dict[int, list[EventOut]] = {}
    for cid, ev in evs:
        events.setdefault(cid, []).append(
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
    homes = {
        h.id: h
        for h in (await session.scalars(select(Home).where(Home.id.in_({c.home_id for c in rows})))).all()
    }
    res_ids = {c.resident_id for c in rows if c.resident_id}
    residents = (
        {r.id: r for r in (await session.scalars(select(Resident).where(Resident.id.in_(res_ids)))).all()}
        if res_ids
        else {}
    )
    st_ids = {c.station_id for c in rows if c.station_id}
    stations = (
        {s.id: s for s in (await session.scalars(select(Station).where(Station.id.in_(st_ids)))).all()}
        if st_ids
        else {}
    )
    nxt: dict[int, datetime] = {}
    for cid, at in (
        await session.execute(
            select(Timer.call_id, Timer.due_at).where(
                Timer.call_id.in_(ids),
                Timer.status == "pending",
                Timer.action.in_(("escalate_street", "escalate_county", "alert_supervisor")),
            )
        )
    ).all():
        at = _aware(at) or at
        nxt[cid] = min(nxt.get(cid, at), at)
    out: list[CallOut] = []
    for cid in ids:
        c = by_id.get(cid)
        if c is None:
            continue
        t = times[cid]
        home = homes.get(c.home_id)
        res = residents.get(c.resident_id or "")
        st = stations.get(c.station_id or "")
        out.append(
            CallOut(
                id=c.id,
                status=c.status,
                priority=c.priority,
                priority_reasons=list(c.priority_reasons or []),
                event_class=c.event_class,
                home_id=c.home_id,
                resident_id=c.resident_id,
                resident_name=res.name if res else None,
                address=home.address if home else None,
                station_id=c.station_id,
                station_name=st.name if st else None,
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


def calls_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    ctx_factory: Callable[[], calls.DispatchContext],
    clock: Clock,
    after_commit: Callable[[calls.Outcome], Awaitable[None]] | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["calls"])
    # a default, not an Annotated alias: with postponed annotations FastAPI resolves
    # annotation strings in module scope, where a local alias does not exist
    who_dep = Depends(current_principal(maker, signer))

    def visible(p: Principal, station_id: str | None) -> bool:
        return p.scope is None or (station_id is not None and station_id in p.scope)

    @router.get("/calls", response_model=list[CallOut])
    async def list_calls(
        status: Literal["open", "closed", "all"] = "open",
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
        who: Principal = who_dep,
    ) -> list[CallOut]:
        stmt = select(Call.id)
        if status == "open":
            stmt = stmt.where(Call.status.in_([s.value for s in OPEN_STATUSES]))
        elif status == "closed":
            stmt = stmt.where(Call.status.in_([s.value for s in CLOSED_STATUSES]))
        if who.scope is not None:
            stmt = stmt.where(Call.station_id.in_(sorted(who.scope)))
        stmt = stmt.order_by(Call.priority, Call.id).limit(limit).offset(offset)
        async with maker() as s:
            ids = list(await s.scalars(stmt))
            return await load_calls(s, ids)

    @router.get("/calls/{call_id}", response_model=CallDetail)
    async def get_call(call_id: int, who: Principal = who_dep) -> CallDetail:
        async with maker() as s:
            call = await s.get(Call, call_id)
            if call is None or not visible(who, call.station_id):
                raise HTTPException(404, "no such call")
            base = (await load_calls(s, [call_id]))[0]
            rows = (
                await s.scalars(select(AuditRow).where(AuditRow.call_id == call_id).order_by(AuditRow.seq))
            ).all()
            resp = (
                await s.execute(
                    select(Assignment, Staff)
                    .join(Staff, Staff.id == Assignment.staff_id)
                    .where(Assignment.call_id == call_id)
                )
            ).all()
        return CallDetail(
            **base.model_dump(),
            timeline=[
                TimelineRow(
                    seq=r.seq,
                    at=r.at,
                    kind=r.kind,
                    actor=r.actor,
                    station_id=r.station_id,
                    detail=r.detail or {},
                )
                for r in rows
            ],
            responders=[
                ResponderOut(
                    staff_id=st.id,
                    name=st.name,
                    phone=st.phone,
                    station_id=st.station_id,
                    state=a.state,
                    active=a.active,
                )
                for a, st in resp
            ],
        )

    @router.post("/calls/{call_id}/{action}", response_model=CallDetail)
    async def call_action(
        call_id: int,
        action: str,
        body: Annotated[ActionBody | None, Body()] = None,
        who: Principal = who_dep,
    ) -> CallDetail:
        if who.role == "supervisor":
            raise HTTPException(403, "supervisors have read-only access to calls")
        if action not in calls.ACTIONS:
            raise HTTPException(404, f"unknown action {action!r}; one of {', '.join(calls.ACTIONS)}")
        data = body.model_dump(exclude_none=True) if body else {}
        now = clock.now()
        async with maker() as s:
            call = await s.get(Call, call_id)
            if call is None or not visible(who, call.station_id):
                raise HTTPException(404, "no such call")
        if action == "dispatch" and who.scope is not None:
            async with maker() as s:
                staff_st = dict(
                    (
                        await s.execute(
                            select(Staff.id, Staff.station_id).where(
                                Staff.id.in_(data.get("staff_ids") or [])
                            )
                        )
                    ).all()
                )
            outside = [sid for sid, st in staff_st.items() if st not in who.scope]
            if outside:
                raise HTTPException(404, f"unknown staff: {', '.join(outside)}")
        actor = calls.Actor(name=f"user:{who.username}", user_id=who.user_id)
        try:
            async with maker() as s, s.begin():
                out = await calls.act(
                    s,
                    call_id=call_id,
                    action=action,
                    actor=actor,
                    body=data,
                    now=now,
                    ctx=ctx_factory(),
                    expected_version=data.get("expected_version"),
                )
                await calls.queue_device_notices(s, out.device_notices, now)
        except calls.CallError as exc:
            raise HTTPException(exc.status, {"message": str(exc), **exc.detail}) from None
        if after_commit is not None:
            await after_commit(out)
        return await get_call(call_id, who)

    return router

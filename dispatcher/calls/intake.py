"""The intake: stored device events become calls. Each event opens a call, joins an open
call of its home, cancels one (the resident pressed cancel), clears one (the device is
back), joins or opens a mass offline incident (dispatcher/incidents/service.py) — or
needs nothing; the decision is recorded in ``event_intake``, whose primary key makes it
once-only across dispatcher copies.

Decisions are made by pure functions (dispatcher/calls/priority.py, routing.py,
escalation.py); this module loads what they need and applies what they decide, all in
the caller's transaction. A batch's reads are made once, set-based, into an
:class:`IntakeBatch` (:func:`open_batch`) and passed down to every event of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.one_of import one_of
from device_gateway.models import DeviceEvent
from dispatcher.audit.chain import AuditKind
from dispatcher.calls import bulk, lifecycle, routing, timers
from dispatcher.calls import escalation as esc
from dispatcher.calls import priority as prio
from dispatcher.calls.actions import close_call, insert_call, record_received
from dispatcher.calls.context import (
    AreaEvents,
    Batch,
    CallError,
    DeviceNotice,
    DispatchContext,
    Outcome,
    is_pg,
    record,
)
from dispatcher.calls.dispatch_config import MASS_OFFLINE
from dispatcher.calls.lifecycle import OPEN_STATUSES, CallStatus
from dispatcher.calls.models import Call, CallEvent, EventIntake
from dispatcher.calls.queries import count_recent_calls, recent_calls, station_nodes
from dispatcher.orders.device_intake import order_from_event
from dispatcher.registry.models import Home, Resident

__all__ = [
    "IntakeBatch",
    "handle_event",
    "open_batch",
    "open_call",
]

_OPEN = [s.value for s in OPEN_STATUSES]
_RESTORES = ("online", "power_restored")


@dataclass(kw_only=True)
class IntakeBatch(Batch):
    """The intake's reads for one transaction: the calls' (homes, residents, open calls,
    recent calls, stations) and, in ``areas``, the mass offline incidents'."""

    areas: AreaEvents
    # PostgreSQL: ids drawn from the calls' sequence for the calls this batch may open
    # (draw_call_ids), so they go in as one INSERT rather than one INSERT … RETURNING each
    call_ids: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------- the batch's reads


async def open_batch(
    session: AsyncSession, *, events: Sequence[DeviceEvent], ctx: DispatchContext, now: datetime
) -> IntakeBatch:
    """Set-based reads for a batch of events: the homes and each home's resident, the
    stations, then each home's open calls (locked) and 24-hour call counts.

    A storm is hundreds of events a second; reading these one query per event was most of
    the intake's round trips. Registry rows are not written by dispatchers, so reading
    them before the chain lock changes nothing a dispatcher copy could race with. The
    open calls' row locks keep every other writer off these calls until our commit, and
    this transaction keeps the lists current (open_call adds its call); the homes' own
    row locks make another copy's intake of the same home wait for our commit, so it
    sees the call we opened."""
    batch = IntakeBatch(areas=ctx.area_events())
    if not events:
        return batch
    homes = sorted({ev.home_id for ev in events if ev.home_id})
    if homes:
        await _read_registry(session, batch, homes)
    await station_nodes(session, batch=batch)
    if homes:
        await _read_open_calls(session, batch, homes, now)
    await _draw_call_ids(session, batch, events)
    return batch


def _may_open_call(ev: DeviceEvent) -> bool:
    return (
        ev.event_class not in ("cancel", "service")
        and ev.type not in _RESTORES
        and prio.opens_call(ev.event_class)
    )


async def _draw_call_ids(session: AsyncSession, batch: IntakeBatch, events: Sequence[DeviceEvent]) -> None:
    """PostgreSQL: one id from the calls' sequence for each home of the batch that has an
    alarm and no open call (the calls it will most likely open), in one statement. An id
    left over is a gap in the numbering, as a rolled-back insert leaves; a call beyond
    them is inserted on its own, as on SQLite, and so is a batch's only call (drawing its
    id would be a statement more, not fewer)."""
    if not is_pg(session):
        return
    homes = {ev.home_id for ev in events if _may_open_call(ev) and not batch.open_calls.get(ev.home_id or "")}
    if len(homes) > 1:
        batch.call_ids = await bulk.draw_ids(session, "calls", len(homes))


async def _read_registry(session: AsyncSession, batch: IntakeBatch, homes: list[str]) -> None:
    """The homes with their residents in one statement; on PostgreSQL the homes locked, in
    id order: two copies with events of one home take turns here, so the second sees the
    call the first opened and joins it. (The chain lock used to serialise all intake; it
    is now taken only at commit.)"""
    stmt = (
        select(Home, Resident)
        .outerjoin(Resident, Resident.home_id == Home.id)
        .where(one_of(Home.id, homes))
        .order_by(Home.id, Resident.capacity_level.desc(), Resident.id)
    )
    if is_pg(session):
        stmt = stmt.with_for_update(of=Home)
    residents: dict[str, Resident | None] = dict.fromkeys(homes)
    for home, resident in (await session.execute(stmt)).all():
        batch.homes[home.id] = home
        if resident is not None and residents.get(home.id) is None:
            residents[home.id] = resident  # the same choice as _resident_of: most dependent first
    batch.residents.update(residents)


async def _read_open_calls(
    session: AsyncSession, batch: IntakeBatch, homes: list[str], now: datetime
) -> None:
    # the homes are locked already (_read_registry)
    stmt = (
        select(Call)
        .where(one_of(Call.home_id, homes), Call.status.in_(_OPEN))
        .order_by(Call.id)  # locked in id order, as timers lock theirs: no deadlock
    )
    if is_pg(session):
        stmt = stmt.with_for_update()
    open_calls: dict[str, list[Call]] = {h: [] for h in homes}
    for call in reversed((await session.scalars(stmt)).all()):
        open_calls[call.home_id].append(call)  # newest first
    batch.open_calls.update(open_calls)
    for h, n in (await count_recent_calls(session, home_ids=homes, now=now)).items():
        batch.recent_calls.setdefault(h, n)


# --------------------------------------------------------------------------- one event


async def handle_event(
    session: AsyncSession,
    *,
    ev: DeviceEvent,
    ctx: DispatchContext,
    batch: IntakeBatch,
    actor: str,
    now: datetime,
) -> Outcome:
    """Turn one stored event into a new call, a joined call, a cancel, a restore — or nothing."""
    out = Outcome()
    if ev.event_class == "cancel" or ev.type in _RESTORES:
        # these look calls up through rows earlier events of the batch may have added
        # (call events, timers): write those first (intake runs without autoflush)
        await session.flush()
    if ev.event_class == "cancel":
        call_id, decision = await _handle_cancel(session, ev, actor=actor, out=out, now=now)
    elif ev.type in _RESTORES:
        call_id, decision = await _handle_restore(session, ev, batch=batch, actor=actor, out=out, now=now)
    elif ev.event_class == "service":
        # a service button: a service order (dispatcher/orders), never an emergency call
        order_id = await order_from_event(session, ev=ev, actor=actor, now=now)
        call_id, decision = None, "order" if order_id is not None else "ignored"
    else:
        call_id, decision = await _handle_alarm(
            session, ev, ctx=ctx, batch=batch, actor=actor, out=out, now=now
        )
    bulk.add(  # a loop's transaction: buffered, written with its other rows at commit
        session,
        EventIntake,
        {"event_pk": ev.id, "decision": decision, "call_id": call_id, "handled_at": now, "handled_by": actor},
    )
    return out


async def _handle_alarm(
    session: AsyncSession,
    ev: DeviceEvent,
    *,
    ctx: DispatchContext,
    batch: IntakeBatch,
    actor: str,
    out: Outcome,
    now: datetime,
) -> tuple[int | None, str]:
    if ev.type == "offline":
        # mass offline (dispatcher.incidents.service): one incident for the area, not a call per home
        incident = await batch.areas.on_offline(
            session, ev=ev, ctx=ctx, batch=batch, actor=actor, out=out, now=now
        )
        if incident is not None:
            return incident, "incident"
    if not prio.opens_call(ev.event_class):
        return None, "ignored"
    call = await _open_call_to_join(session, ev, ctx, batch)
    if call is not None:
        await _join(session, call, ev, ctx=ctx, batch=batch, actor=actor, out=out, now=now)
        return call.id, "joined"
    call = await open_call(session, ev=ev, ctx=ctx, batch=batch, actor=actor, out=out, now=now)
    return call.id, "opened"


async def _open_call_to_join(
    session: AsyncSession, ev: DeviceEvent, ctx: DispatchContext, batch: IntakeBatch
) -> Call | None:
    if ev.home_id in batch.open_calls:
        candidates = [c for c in batch.open_calls[ev.home_id] if c.status in _OPEN]
    else:
        stmt = select(Call).where(Call.home_id == ev.home_id, Call.status.in_(_OPEN)).order_by(Call.id.desc())
        if is_pg(session):
            stmt = stmt.with_for_update()
        candidates = list((await session.scalars(stmt)).all())
    for call in candidates:
        since = (ev.received_at - call.last_event_at).total_seconds()
        if prio.joins_call(
            event_class=ev.event_class,
            event_type=ev.type,
            call_event_class=call.event_class,
            seconds_since_last_event=since,
            window_s=ctx.join_window_s,
        ):
            return call
    return None


async def _resident_of(session: AsyncSession, home_id: str, batch: IntakeBatch) -> Resident | None:
    if home_id in batch.residents:
        return batch.residents[home_id]
    return (
        await session.scalars(
            select(Resident)
            .where(Resident.home_id == home_id)
            .order_by(Resident.capacity_level.desc(), Resident.id)
            .limit(1)
        )
    ).first()


def _assess(
    ctx: DispatchContext, ev: DeviceEvent, event_class: str, resident: Resident | None, recent_calls_24h: int
) -> tuple[str, tuple[str, ...]]:
    """The priority of a call of ``event_class`` raised by ``ev``, about ``resident``."""
    return prio.assess_priority(
        event_class=event_class,
        event_type=ev.type,
        capacity_level=resident.capacity_level if resident else None,
        living_alone=resident.living_alone if resident else False,
        night=ctx.dispatch_cfg.priority.is_night(ev.received_at.astimezone(ctx.tz).hour),
        recent_calls_24h=recent_calls_24h,
        cfg=ctx.dispatch_cfg.priority,
    )


def _origin(ev: DeviceEvent, home: Home) -> tuple[tuple[float, float], bool]:
    """Where help must go, and whether a worn device said so (else: the home)."""
    loc = ev.data.get("location") if isinstance(ev.data, dict) else None
    if (
        isinstance(loc, dict)
        and isinstance(loc.get("lat"), int | float)
        and isinstance(loc.get("lon"), int | float)
    ):
        return (float(loc["lat"]), float(loc["lon"])), True
    return (home.lat, home.lon), False


async def open_call(
    session: AsyncSession,
    *,
    ev: DeviceEvent,
    ctx: DispatchContext,
    batch: IntakeBatch,
    actor: str,
    out: Outcome,
    now: datetime,
) -> Call:
    home = batch.homes.get(ev.home_id) or await session.get(Home, ev.home_id)
    if home is None:
        raise CallError(f"event {ev.id} names unknown home {ev.home_id}", 500)
    resident = await _resident_of(session, home.id, batch)
    recent = await recent_calls(session, home_id=home.id, batch=batch, now=now)
    priority, p_reasons = _assess(ctx, ev, ev.event_class, resident, recent)
    origin, from_device = _origin(ev, home)
    stations = await station_nodes(session, batch=batch)
    area = routing.parse_area(home.area)
    travel = await ctx.engine.minutes(origin, list(stations.values()), area)
    route = routing.choose_station(
        home_station_id=home.station_id,
        origin=origin,
        origin_from_device=from_device,
        area=area,
        stations=stations,
        travel_min=travel,
        cfg=ctx.dispatch_cfg.routing,
    )
    policy = ctx.policies.select(ev.event_class, priority)
    values: dict[str, Any] = {
        "status": (CallStatus.assigned if route.station_id else CallStatus.open).value,
        "priority": priority,
        "priority_reasons": list(p_reasons),
        "event_class": ev.event_class,
        "home_id": home.id,
        "resident_id": resident.id if resident else None,
        "station_id": route.station_id,
        "tier": route.tier,
        "route_reasons": list(route.reasons),
        "lat": origin[0],
        "lon": origin[1],
        "policy": esc.snapshot(policy, travel_limit_s=ctx.dispatch_cfg.routing.limit_min(area) * 60),
        "escalation_level": 0,
    }
    call = await insert_call(
        session,
        values=values,
        ev=ev,
        received={
            "device_id": ev.device_id,
            "event_id": ev.event_id,
            "type": ev.type,
            "event_pk": ev.id,
            "source": ev.source,
        },
        opened={
            "event_class": ev.event_class,
            "policy": policy.name,
            "home_id": home.id,
            "priority": priority,
            "priority_reasons": list(p_reasons),
            "location_from_device": from_device,
        },
        assigned={
            "station_id": route.station_id,
            "tier": route.tier,
            "reasons": list(route.reasons),
            "travel_min": round(route.travel_min, 1) if route.travel_min is not None else None,
        },
        actor=actor,
        now=now,
        call_id=batch.call_ids.pop(0) if batch.call_ids else None,
    )
    batch.call_opened(call)
    bulk.add(session, CallEvent, {"event_pk": ev.id, "call_id": call.id, "joined_at": now})
    out.calls.add(call.id)
    # the opening step (alert the station) fires here, with the call: no timer pass for it
    await timers.open_escalation(session, call, worker=actor, ctx=ctx, batch=batch, out=out, now=now)
    if route.station_id:
        out.device_notices.append(DeviceNotice(call.id, ev.device_id, ev.event_id, "assigned"))
    return call


async def _join(
    session: AsyncSession,
    call: Call,
    ev: DeviceEvent,
    *,
    ctx: DispatchContext,
    batch: IntakeBatch,
    actor: str,
    out: Outcome,
    now: datetime,
) -> None:
    bulk.add(session, CallEvent, {"event_pk": ev.id, "call_id": call.id, "joined_at": now})
    new_class = prio.call_class_after_join(call.event_class, ev.event_class)
    detail: dict[str, Any] = {
        "device_id": ev.device_id,
        "event_id": ev.event_id,
        "type": ev.type,
        "event_pk": ev.id,
    }
    values: dict[str, Any] = {
        "last_event_at": max(call.last_event_at, ev.received_at),
        "version": call.version + 1,
    }
    resident = (
        await session.get(Resident, call.resident_id)
        if call.resident_id
        else await _resident_of(session, call.home_id, batch)
    )
    recent = await recent_calls(session, home_id=call.home_id, batch=batch, now=now)
    priority, reasons = _assess(ctx, ev, new_class, resident, recent + 1)
    if new_class != call.event_class:
        values["event_class"] = new_class
        detail["class_raised_to"] = new_class
    if priority < call.priority:  # "P1" < "P2": a joined event can only raise the priority
        values["priority"] = priority
        values["priority_reasons"] = sorted(set(call.priority_reasons) | set(reasons))
        detail["priority_raised_to"] = priority
    await session.execute(update(Call).where(Call.id == call.id).values(**values))
    await record_received(session, ev=ev, call_id=call.id, station_id=call.station_id, detail=detail)
    await record(session, call, AuditKind.event_joined, at=now, actor=actor, detail=detail)
    out.calls.add(call.id)
    if call.station_id:
        out.device_notices.append(DeviceNotice(call.id, ev.device_id, ev.event_id, "assigned"))


# --------------------------------------------------------------------------- cancel, restore


async def _cancel_target(session: AsyncSession, ev: DeviceEvent, ref: object) -> Call | None:
    """The open call a resident's cancel is about: the one its ``ref`` event raised, else
    the home's newest. An area's incident is no resident's to cancel."""
    open_calls = (
        await session.scalars(
            select(Call)
            .where(
                Call.home_id == ev.home_id,
                Call.status.in_(_OPEN),
                Call.event_class != MASS_OFFLINE,
            )
            .order_by(Call.id.desc())
        )
    ).all()
    if isinstance(ref, str):
        for call in open_calls:
            hit = await session.scalar(
                select(func.count())
                .select_from(CallEvent)
                .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
                .where(
                    CallEvent.call_id == call.id,
                    DeviceEvent.device_id == ev.device_id,
                    DeviceEvent.event_id == ref,
                )
            )
            if hit:
                return call
    return open_calls[0] if open_calls else None


async def _handle_cancel(
    session: AsyncSession, ev: DeviceEvent, *, actor: str, out: Outcome, now: datetime
) -> tuple[int | None, str]:
    ref = ev.data.get("ref") if isinstance(ev.data, dict) else None
    target = await _cancel_target(session, ev, ref)
    if target is None:
        return None, "ignored"
    bulk.add(session, CallEvent, {"event_pk": ev.id, "call_id": target.id, "joined_at": now})
    detail = {"device_id": ev.device_id, "event_id": ev.event_id, "ref": ref}
    received = {**detail, "type": "cancel", "event_pk": ev.id}
    await record_received(session, ev=ev, call_id=target.id, station_id=target.station_id, detail=received)
    resident = f"resident:{ev.home_id}"
    if not lifecycle.resident_may_cancel(CallStatus(target.status)):
        # after dispatch a resident's cancel is only noted: someone still goes to the door
        noted = {**detail, "applied": False}
        await record(session, target, AuditKind.cancel_requested, at=now, actor=resident, detail=noted)
        out.calls.add(target.id)
        return target.id, "noted"
    await close_call(
        session,
        target,
        status=CallStatus.cancelled,
        outcome="cancelled_by_resident",
        actor=resident,
        kind=AuditKind.cancelled,
        detail={**detail, "by": "resident"},
        out=out,
        now=now,
    )
    return target.id, "cancelled"


async def _handle_restore(
    session: AsyncSession, ev: DeviceEvent, *, batch: IntakeBatch, actor: str, out: Outcome, now: datetime
) -> tuple[int | None, str]:
    # mass offline (dispatcher.incidents.service): a device of an open incident is back
    incident = await batch.areas.on_restore(session, ev=ev, batch=batch, actor=actor, out=out, now=now)
    call_id, decision = await _clear_trouble(session, ev, actor=actor, out=out, now=now)
    if incident is not None and call_id is None:
        return incident, "restored"
    return call_id, decision


async def _clear_trouble(
    session: AsyncSession, ev: DeviceEvent, *, actor: str, out: Outcome, now: datetime
) -> tuple[int | None, str]:
    """The device's trouble calls about what this event says is back are resolved."""
    cleared = prio.restore_clears(ev.type)
    if cleared is None:
        return None, "ignored"
    # distinct ids, then the calls: PostgreSQL cannot compare the json columns of calls.*
    ids = list(
        (
            await session.scalars(
                select(Call.id)
                .join(CallEvent, CallEvent.call_id == Call.id)
                .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
                .where(
                    Call.status.in_(_OPEN),
                    Call.event_class == "trouble",
                    DeviceEvent.device_id == ev.device_id,
                    DeviceEvent.type == cleared,
                )
                .distinct()
            )
        ).all()
    )
    if not ids:
        return None, "ignored"
    stmt = select(Call).where(one_of(Call.id, ids)).order_by(Call.id)
    if is_pg(session):
        stmt = stmt.with_for_update()
    rows = list((await session.scalars(stmt)).all())
    if not rows:
        return None, "ignored"
    for call in rows:
        bulk.add(session, CallEvent, {"event_pk": ev.id, "call_id": call.id, "joined_at": now})
        detail = {"device_id": ev.device_id, "event_id": ev.event_id, "type": ev.type, "event_pk": ev.id}
        await record_received(session, ev=ev, call_id=call.id, station_id=call.station_id, detail=detail)
        await close_call(
            session,
            call,
            status=CallStatus.resolved,
            outcome="restored",
            actor=actor,
            kind=AuditKind.restored,
            detail={"device_id": ev.device_id, "cleared": cleared},
            out=out,
            now=now,
        )
    return rows[0].id, "restored"

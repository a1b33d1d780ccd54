"""Calls: opened from stored events, routed, escalated by timers, acted on by operators.

Decisions are made by pure functions (dispatcher.priority, .routing, .escalation); this
module loads what they need, applies what they decide, and writes one audit row per fact,
all inside the caller's transaction. Several dispatcher copies may run these functions at
once: events are claimed through ``event_intake``'s primary key, calls and timers with
row locks (SKIP LOCKED on PostgreSQL), and state changes are conditional updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher import audit, routing
from dispatcher import escalation as esc
from dispatcher import priority as prio
from dispatcher.chain import AuditKind
from dispatcher.models import (
    OPEN_STATUSES,
    Assignment,
    AuditRow,
    Call,
    CallEvent,
    CallStatus,
    Contact,
    DeviceEvent,
    EventIntake,
    Home,
    Notification,
    Resident,
    Staff,
    Station,
    Timer,
    User,
)

OUTCOMES = (
    "helped_on_site",
    "taken_to_hospital",
    "false_alarm",
    "no_access",
    "handed_to_120",
    "handed_to_110",
    "handed_to_119",
    "restored",
    "cancelled_by_resident",
    "cancelled",
    "other",
)
ACTIONS = (
    "acknowledge",
    "dispatch",
    "en-route",
    "arrive",
    "resolve",
    "cancel",
    "escalate",
    "note",
    "handoff",
)
LEVEL_NAMES = {0: "own", 1: "street", 2: "county"}


class CallError(Exception):
    """An action that cannot be taken; ``status`` is the HTTP code the API answers with."""

    def __init__(self, message: str, status: int = 409, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = dict(detail or {})


@dataclass
class DeviceNotice:
    """An ack the device should get once the transaction committed."""

    call_id: int
    device_id: str
    event_id: str
    state: str


@dataclass
class Outcome:
    """What a transaction changed, for the shell to announce after commit."""

    calls: set[int] = field(default_factory=set)
    device_notices: list[DeviceNotice] = field(default_factory=list)
    notifications: int = 0

    def merge(self, other: Outcome) -> None:
        self.calls |= other.calls
        self.device_notices.extend(other.device_notices)
        self.notifications += other.notifications


@dataclass(frozen=True)
class DispatchContext:
    """Configuration a dispatcher copy holds for the life of the process."""

    dispatch_cfg: routing.DispatchConfig
    policies: esc.PolicySet
    engine: routing.TravelEngine
    tz: ZoneInfo
    join_window_s: float = 600.0
    notifier_channel: str = "log"


def _is_pg(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --------------------------------------------------------------------------- loading


async def station_nodes(session: AsyncSession) -> dict[str, routing.StationNode]:
    """Every station with its count of on-duty responders not busy on a call.

    Cached for the transaction: an alarm storm opens hundreds of calls per batch, and
    staffing does not change inside one (operators send responders in their own)."""
    cached = session.info.get("carecall.station_nodes")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    nodes = await _load_station_nodes(session)
    session.info["carecall.station_nodes"] = nodes
    return nodes


async def _load_station_nodes(session: AsyncSession) -> dict[str, routing.StationNode]:
    busy = select(Assignment.staff_id).where(Assignment.active.is_(True))
    counts = dict(
        (
            await session.execute(
                select(Staff.station_id, func.count())
                .where(
                    Staff.on_duty.is_(True),
                    Staff.role.in_(("responder", "nurse", "doctor")),
                    Staff.id.not_in(busy),
                )
                .group_by(Staff.station_id)
            )
        ).all()
    )
    rows = (await session.scalars(select(Station))).all()
    return {
        s.id: routing.station_node(
            id=s.id,
            name=s.name,
            tier=s.tier,
            parent_id=s.parent_id,
            lat=s.lat,
            lon=s.lon,
            area=s.area,
            on_duty_responders=int(counts.get(s.id, 0)),
        )
        for s in rows
    }


async def recent_calls(session: AsyncSession, home_id: str, now: datetime) -> int:
    """Calls of this home opened in the last 24 h (from the audit log), counted once per
    transaction and home; open_call adds its own (a storm joins many events per home)."""
    cache: dict[str, int] = session.info.setdefault("carecall.recent_calls", {})
    if home_id not in cache:
        cache[home_id] = await _count_recent_calls(session, home_id, now)
    return cache[home_id]


def _count_opened(session: AsyncSession, home_id: str) -> None:
    cache: dict[str, int] = session.info.setdefault("carecall.recent_calls", {})
    if home_id in cache:
        cache[home_id] += 1


async def _count_recent_calls(session: AsyncSession, home_id: str, now: datetime) -> int:
    since = now - timedelta(hours=24)
    return int(
        await session.scalar(
            select(func.count())
            .select_from(AuditRow)
            .join(Call, Call.id == AuditRow.call_id)
            .where(
                Call.home_id == home_id, AuditRow.kind == AuditKind.call_opened.value, AuditRow.at >= since
            )
        )
        or 0
    )


# --------------------------------------------------------------------------- intake


async def claim_events(session: AsyncSession, limit: int) -> list[DeviceEvent]:
    """Stored events no dispatcher has handled yet, oldest first, locked for us."""
    handled = select(EventIntake.event_pk).where(EventIntake.event_pk == DeviceEvent.id).exists()
    stmt = select(DeviceEvent).where(~handled).order_by(DeviceEvent.id).limit(limit)
    if _is_pg(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


_OPEN_CALLS = "carecall.open_calls"  # home id -> its open calls, newest first (locked)
_RESIDENTS = "carecall.residents"  # home id -> the resident a call is about, or None
_HOMES = "carecall.homes"  # home id -> Home


async def prefetch_registry(session: AsyncSession, events: Sequence[DeviceEvent]) -> None:
    """Set-based reads for a batch of events, before the chain lock: the homes (into the
    session's identity map, so ``session.get`` finds them) and each home's resident.

    A storm is hundreds of events a second; reading these one query per event was most of
    the intake's round trips. Registry rows are not written by dispatchers, so reading
    them before the chain lock changes nothing a dispatcher copy could race with."""
    homes = sorted({ev.home_id for ev in events if ev.home_id})
    if not homes:
        return
    # kept in session.info: the identity map holds objects weakly, so a discarded result
    # would be collected and session.get would query again
    found = {h.id: h for h in (await session.scalars(select(Home).where(Home.id.in_(homes)))).all()}
    session.info.setdefault(_HOMES, {}).update(found)
    residents: dict[str, Resident | None] = dict.fromkeys(homes)
    rows = await session.scalars(
        select(Resident)
        .where(Resident.home_id.in_(homes))
        .order_by(Resident.home_id, Resident.capacity_level.desc(), Resident.id)
    )
    for r in rows:
        if residents.get(r.home_id) is None:
            residents[r.home_id] = r  # the same choice as _resident_of: most dependent first
    session.info.setdefault(_RESIDENTS, {}).update(residents)


async def prefetch_calls(session: AsyncSession, events: Sequence[DeviceEvent], now: datetime) -> None:
    """The open calls of every home in the batch, locked, in one query, and the 24-hour
    call counts of those homes in another. The row locks keep every other writer off
    these calls until our commit, and this transaction keeps the lists current
    (open_call adds its call); the homes' own row locks make another copy's intake of
    the same home wait for our commit, so it sees the call we opened."""
    homes = sorted({ev.home_id for ev in events if ev.home_id})
    if not homes:
        return
    if _is_pg(session):
        # The homes first, in id order: two copies with events of one home take turns
        # here, so the second sees the call the first opened and joins it. (The chain
        # lock used to serialise all intake; it is now taken only at commit.)
        await session.execute(select(Home.id).where(Home.id.in_(homes)).order_by(Home.id).with_for_update())
    stmt = (
        select(Call)
        .where(Call.home_id.in_(homes), Call.status.in_([s.value for s in OPEN_STATUSES]))
        .order_by(Call.id)  # locked in id order, as timers lock theirs: no deadlock
    )
    if _is_pg(session):
        stmt = stmt.with_for_update()
    open_calls: dict[str, list[Call]] = {h: [] for h in homes}
    for call in reversed((await session.scalars(stmt)).all()):
        open_calls[call.home_id].append(call)  # newest first
    session.info.setdefault(_OPEN_CALLS, {}).update(open_calls)
    since = now - timedelta(hours=24)
    counts = dict(
        (
            await session.execute(
                select(Call.home_id, func.count())
                .select_from(AuditRow)
                .join(Call, Call.id == AuditRow.call_id)
                .where(
                    Call.home_id.in_(homes),
                    AuditRow.kind == AuditKind.call_opened.value,
                    AuditRow.at >= since,
                )
                .group_by(Call.home_id)
            )
        ).all()
    )
    cache: dict[str, int] = session.info.setdefault("carecall.recent_calls", {})
    for h in homes:
        cache.setdefault(h, int(counts.get(h, 0)))


async def handle_event(
    session: AsyncSession, ev: DeviceEvent, ctx: DispatchContext, *, now: datetime, actor: str
) -> Outcome:
    """Turn one stored event into a new call, a joined call, a cancel, a restore — or nothing."""
    out = Outcome()
    call_id: int | None = None
    decision = "ignored"
    if ev.event_class == "cancel" or ev.type in ("online", "power_restored"):
        # these look calls up through rows earlier events of the batch may have added
        # (call events, timers): write those first (intake runs without autoflush)
        await session.flush()
    if ev.event_class == "cancel":
        call_id, decision = await _handle_cancel(session, ev, now=now, actor=actor, out=out)
    elif ev.type in ("online", "power_restored"):
        call_id, decision = await _handle_restore(session, ev, now=now, actor=actor, out=out)
    elif prio.opens_call(ev.event_class):
        call = await _open_call_to_join(session, ev, ctx)
        if call is not None:
            await _join(session, call, ev, ctx, now=now, actor=actor, out=out)
            call_id, decision = call.id, "joined"
        else:
            call = await open_call(session, ev, ctx, now=now, actor=actor, out=out)
            call_id, decision = call.id, "opened"
    session.add(
        EventIntake(event_pk=ev.id, decision=decision, call_id=call_id, handled_at=now, handled_by=actor)
    )
    return out


async def _record_received(
    session: AsyncSession, ev: DeviceEvent, *, call_id: int, station_id: str | None, detail: Mapping[str, Any]
) -> None:
    """The audit fact "this device event reached this call", stamped with the time the
    gateway received it: response times are measured from here."""
    await audit.append(
        session,
        kind=AuditKind.event_received.value,
        at=ev.received_at,
        actor=f"device:{ev.device_id}",
        call_id=call_id,
        station_id=station_id,
        detail=detail,
    )


async def _open_call_to_join(session: AsyncSession, ev: DeviceEvent, ctx: DispatchContext) -> Call | None:
    prefetched: dict[str, list[Call]] = session.info.get(_OPEN_CALLS, {})
    if ev.home_id in prefetched:
        open_ = {s.value for s in OPEN_STATUSES}
        candidates = [c for c in prefetched[ev.home_id] if c.status in open_]
    else:
        stmt = (
            select(Call)
            .where(Call.home_id == ev.home_id, Call.status.in_([s.value for s in OPEN_STATUSES]))
            .order_by(Call.id.desc())
        )
        if _is_pg(session):
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


async def _resident_of(session: AsyncSession, home_id: str) -> Resident | None:
    prefetched: dict[str, Resident | None] = session.info.get(_RESIDENTS, {})
    if home_id in prefetched:
        return prefetched[home_id]
    return (
        await session.scalars(
            select(Resident)
            .where(Resident.home_id == home_id)
            .order_by(Resident.capacity_level.desc(), Resident.id)
            .limit(1)
        )
    ).first()


def _night(ctx: DispatchContext, at: datetime) -> bool:
    return ctx.dispatch_cfg.priority.is_night(at.astimezone(ctx.tz).hour)


async def open_call(
    session: AsyncSession, ev: DeviceEvent, ctx: DispatchContext, *, now: datetime, actor: str, out: Outcome
) -> Call:
    home = session.info.get(_HOMES, {}).get(ev.home_id) or await session.get(Home, ev.home_id)
    if home is None:
        raise CallError(f"event {ev.id} names unknown home {ev.home_id}", 500)
    resident = await _resident_of(session, home.id)
    priority, p_reasons = prio.assess_priority(
        event_class=ev.event_class,
        event_type=ev.type,
        capacity_level=resident.capacity_level if resident else None,
        living_alone=resident.living_alone if resident else False,
        night=_night(ctx, ev.received_at),
        recent_calls_24h=await recent_calls(session, home.id, now),
        cfg=ctx.dispatch_cfg.priority,
    )
    loc = ev.data.get("location") if isinstance(ev.data, dict) else None
    from_device = (
        isinstance(loc, dict)
        and isinstance(loc.get("lat"), int | float)
        and isinstance(loc.get("lon"), int | float)
    )
    origin = (
        (float(loc["lat"]), float(loc["lon"]))
        if from_device and isinstance(loc, dict)
        else (home.lat, home.lon)
    )
    stations = await station_nodes(session)
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
    limit_min = ctx.dispatch_cfg.routing.limit_min(area)
    policy = ctx.policies.select(ev.event_class, priority)
    snap = esc.snapshot(policy, travel_limit_s=limit_min * 60)
    values: dict[str, Any] = {
        "status": CallStatus.assigned.value if route.station_id else CallStatus.open.value,
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
        "outcome": None,
        "policy": snap,
        "escalation_level": 0,
        "generation": 1,
        "version": 1,
        "last_event_at": ev.received_at,
    }
    # One INSERT … RETURNING for the call alone (its id is needed below); a session
    # flush here would also write every row the batch has added so far, a round of
    # inserts per call instead of one statement per table at commit.
    call = (await session.scalars(insert(Call).returning(Call), [values])).one()
    _count_opened(session, home.id)
    prefetched: dict[str, list[Call]] = session.info.get(_OPEN_CALLS, {})
    if home.id in prefetched:
        prefetched[home.id].insert(0, call)  # newest first, as the query orders them
    session.add(CallEvent(event_pk=ev.id, call_id=call.id, joined_at=now))
    ev_detail = {
        "device_id": ev.device_id,
        "event_id": ev.event_id,
        "type": ev.type,
        "event_pk": ev.id,
        "source": ev.source,
    }
    await _record_received(session, ev, call_id=call.id, station_id=route.station_id, detail=ev_detail)
    await audit.append(
        session,
        kind=AuditKind.call_opened.value,
        at=now,
        actor=actor,
        call_id=call.id,
        station_id=route.station_id,
        detail={
            "event_class": ev.event_class,
            "policy": policy.name,
            "home_id": home.id,
            "priority": priority,
            "priority_reasons": list(p_reasons),
            "location_from_device": from_device,
        },
    )
    await audit.append(
        session,
        kind=AuditKind.assigned.value,
        at=now,
        actor=actor,
        call_id=call.id,
        station_id=route.station_id,
        detail={
            "station_id": route.station_id,
            "tier": route.tier,
            "reasons": list(route.reasons),
            "travel_min": round(route.travel_min, 1) if route.travel_min is not None else None,
        },
    )
    for planned in esc.initial_timers(esc.from_snapshot(snap), now):
        _schedule(session, call, planned)
    out.calls.add(call.id)
    if route.station_id:
        out.device_notices.append(DeviceNotice(call.id, ev.device_id, ev.event_id, "assigned"))
    return call


async def _join(
    session: AsyncSession,
    call: Call,
    ev: DeviceEvent,
    ctx: DispatchContext,
    *,
    now: datetime,
    actor: str,
    out: Outcome,
) -> None:
    session.add(CallEvent(event_pk=ev.id, call_id=call.id, joined_at=now))
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
        else await _resident_of(session, call.home_id)
    )
    priority, reasons = prio.assess_priority(
        event_class=new_class,
        event_type=ev.type,
        capacity_level=resident.capacity_level if resident else None,
        living_alone=resident.living_alone if resident else False,
        night=_night(ctx, ev.received_at),
        recent_calls_24h=await recent_calls(session, call.home_id, now) + 1,
        cfg=ctx.dispatch_cfg.priority,
    )
    if new_class != call.event_class:
        values["event_class"] = new_class
        detail["class_raised_to"] = new_class
    if priority < call.priority:  # "P1" < "P2": a joined event can only raise the priority
        values["priority"] = priority
        values["priority_reasons"] = sorted(set(call.priority_reasons) | set(reasons))
        detail["priority_raised_to"] = priority
    await session.execute(update(Call).where(Call.id == call.id).values(**values))
    await _record_received(session, ev, call_id=call.id, station_id=call.station_id, detail=detail)
    await audit.append(
        session,
        kind=AuditKind.event_joined.value,
        at=now,
        actor=actor,
        call_id=call.id,
        station_id=call.station_id,
        detail=detail,
    )
    out.calls.add(call.id)
    if call.station_id:
        out.device_notices.append(DeviceNotice(call.id, ev.device_id, ev.event_id, "assigned"))


async def _handle_cancel(
    session: AsyncSession, ev: DeviceEvent, *, now: datetime, actor: str, out: Outcome
) -> tuple[int | None, str]:
    ref = ev.data.get("ref") if isinstance(ev.data, dict) else None
    open_calls = (
        await session.scalars(
            select(Call)
            .where(Call.home_id == ev.home_id, Call.status.in_([s.value for s in OPEN_STATUSES]))
            .order_by(Call.id.desc())
        )
    ).all()
    target: Call | None = None
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
                target = call
                break
    if target is None and open_calls:
        target = open_calls[0]
    if target is None:
        return None, "ignored"
    session.add(CallEvent(event_pk=ev.id, call_id=target.id, joined_at=now))
    detail = {"device_id": ev.device_id, "event_id": ev.event_id, "ref": ref}
    await _record_received(
        session,
        ev,
        call_id=target.id,
        station_id=target.station_id,
        detail={**detail, "type": "cancel", "event_pk": ev.id},
    )
    responders_sent = target.status in ("dispatched", "en_route", "on_scene")
    if responders_sent:
        # after dispatch a resident's cancel is only noted: someone still goes to the door
        await audit.append(
            session,
            kind=AuditKind.cancel_requested.value,
            at=now,
            actor=f"resident:{ev.home_id}",
            call_id=target.id,
            station_id=target.station_id,
            detail={**detail, "applied": False},
        )
        out.calls.add(target.id)
        return target.id, "noted"
    await _close(
        session,
        target,
        status=CallStatus.cancelled,
        outcome="cancelled_by_resident",
        now=now,
        actor=f"resident:{ev.home_id}",
        kind=AuditKind.cancelled,
        detail={**detail, "by": "resident"},
        out=out,
    )
    return target.id, "cancelled"


async def _handle_restore(
    session: AsyncSession, ev: DeviceEvent, *, now: datetime, actor: str, out: Outcome
) -> tuple[int | None, str]:
    cleared = prio.restore_clears(ev.type)
    if cleared is None:
        return None, "ignored"
    rows = (
        (
            await session.execute(
                select(Call)
                .join(CallEvent, CallEvent.call_id == Call.id)
                .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
                .where(
                    Call.status.in_([s.value for s in OPEN_STATUSES]),
                    Call.event_class == "trouble",
                    DeviceEvent.device_id == ev.device_id,
                    DeviceEvent.type == cleared,
                )
                .distinct()
            )
        )
        .scalars()
        .all()
    )
    if not rows:
        return None, "ignored"
    for call in rows:
        session.add(CallEvent(event_pk=ev.id, call_id=call.id, joined_at=now))
        await _record_received(
            session,
            ev,
            call_id=call.id,
            station_id=call.station_id,
            detail={"device_id": ev.device_id, "event_id": ev.event_id, "type": ev.type, "event_pk": ev.id},
        )
        await _close(
            session,
            call,
            status=CallStatus.resolved,
            outcome="restored",
            now=now,
            actor=actor,
            kind=AuditKind.restored,
            detail={"device_id": ev.device_id, "cleared": cleared},
            out=out,
        )
    return rows[0].id, "restored"


async def _close(
    session: AsyncSession,
    call: Call,
    *,
    status: CallStatus,
    outcome: str,
    now: datetime,
    actor: str,
    kind: AuditKind,
    detail: Mapping[str, Any],
    out: Outcome,
) -> None:
    await session.execute(
        update(Call)
        .where(Call.id == call.id)
        .values(status=status.value, outcome=outcome, version=Call.version + 1)
    )
    await session.execute(
        update(Assignment)
        .where(Assignment.call_id == call.id, Assignment.active.is_(True))
        .values(active=False, state="released")
    )
    await session.execute(
        update(Timer).where(Timer.call_id == call.id, Timer.status == "pending").values(status="cancelled")
    )
    await audit.append(
        session,
        kind=kind.value,
        at=now,
        actor=actor,
        call_id=call.id,
        station_id=call.station_id,
        detail={**detail, "outcome": outcome},
    )
    out.calls.add(call.id)
    state = "resolved"
    for dev_id, ev_id in await _call_device_events(session, call.id):
        out.device_notices.append(DeviceNotice(call.id, dev_id, ev_id, state))


async def _call_device_events(session: AsyncSession, call_id: int) -> list[tuple[str, str]]:
    rows = await session.execute(
        select(DeviceEvent.device_id, DeviceEvent.event_id)
        .join(CallEvent, CallEvent.event_pk == DeviceEvent.id)
        .where(
            CallEvent.call_id == call_id, DeviceEvent.source == "device", DeviceEvent.event_class != "cancel"
        )
    )
    return [(d, e) for d, e in rows.all()]


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Actor:
    """Who acts: an operator (user) or the system."""

    name: str
    user_id: int | None = None
    staff_id: str | None = None


_TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    # action: (allowed current statuses, new status)
    "acknowledge": (("open", "assigned"), "acknowledged"),
    "dispatch": (("open", "assigned", "acknowledged", "dispatched", "en_route", "on_scene"), "dispatched"),
    "en-route": (("dispatched",), "en_route"),
    "arrive": (("dispatched", "en_route"), "on_scene"),
    "resolve": (tuple(s.value for s in OPEN_STATUSES), "resolved"),
    "cancel": (tuple(s.value for s in OPEN_STATUSES), "cancelled"),
    "escalate": (tuple(s.value for s in OPEN_STATUSES), None),
    "note": (tuple(s.value for s in (*OPEN_STATUSES, CallStatus.resolved, CallStatus.cancelled)), None),
    "handoff": (tuple(s.value for s in OPEN_STATUSES), None),
}
_DEVICE_STATE = {"en-route": "en_route", "arrive": "on_scene", "resolve": "resolved", "cancel": "resolved"}


async def _lock_call(session: AsyncSession, call_id: int) -> Call | None:
    stmt = select(Call).where(Call.id == call_id)
    if _is_pg(session):
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def _who_did(session: AsyncSession, call_id: int, kind: str) -> tuple[str, datetime] | None:
    row = (
        await session.execute(
            select(AuditRow.actor, AuditRow.at)
            .where(AuditRow.call_id == call_id, AuditRow.kind == kind)
            .order_by(AuditRow.seq)
            .limit(1)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def act(
    session: AsyncSession,
    *,
    call_id: int,
    action: str,
    actor: Actor,
    body: Mapping[str, Any],
    now: datetime,
    ctx: DispatchContext,
    expected_version: int | None = None,
) -> Outcome:
    """Apply one operator action. Raises CallError (409 with who did it, when another
    operator was first; 422 for bad input)."""
    if action not in _TRANSITIONS:
        raise CallError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}", 404)
    # the call's row lock first, the chain's last, like the dispatcher's loops (which
    # lock calls and chain at commit): the same order everywhere, so no deadlock
    call = await _lock_call(session, call_id)
    if call is None:
        raise CallError("no such call", 404)
    await audit.lock_head(session)
    allowed, new_status = _TRANSITIONS[action]
    if call.status not in allowed:
        detail: dict[str, Any] = {"status": call.status}
        who = None
        if action == "acknowledge":
            who = await _who_did(session, call.id, AuditKind.acknowledged.value)
        if who:
            detail.update(by=who[0], at=who[1].isoformat())
            raise CallError(f"already acknowledged by {who[0]} at {who[1].isoformat()}", 409, detail)
        raise CallError(f"cannot {action} a call that is {call.status}", 409, detail)
    if expected_version is not None and expected_version != call.version:
        raise CallError("the call changed meanwhile; reload it", 409, {"version": call.version})
    out = Outcome(calls={call.id})
    station = call.station_id
    if action == "acknowledge":
        await _set_status(session, call, "acknowledged", expect=allowed)
        await audit.append(
            session,
            kind=AuditKind.acknowledged.value,
            at=now,
            actor=actor.name,
            call_id=call.id,
            station_id=station,
            detail={"user_id": actor.user_id},
        )
        await _cancel_timers(session, call, "acknowledged")
    elif action == "dispatch":
        staff_ids = body.get("staff_ids")
        if not isinstance(staff_ids, list) or not staff_ids or not all(isinstance(s, str) for s in staff_ids):
            raise CallError("dispatch needs staff_ids: a list of on-duty staff ids", 422)
        await _dispatch(session, call, staff_ids, actor=actor, now=now, ack_allowed=allowed)
    elif action in ("en-route", "arrive"):
        assert new_status is not None
        await _set_status(session, call, new_status, expect=allowed)
        kind = AuditKind.en_route if action == "en-route" else AuditKind.on_scene
        state = "en_route" if action == "en-route" else "on_scene"
        await session.execute(
            update(Assignment)
            .where(Assignment.call_id == call.id, Assignment.active.is_(True))
            .values(state=state)
        )
        await audit.append(
            session,
            kind=kind.value,
            at=now,
            actor=actor.name,
            call_id=call.id,
            station_id=station,
            detail={k: v for k, v in body.items() if k in ("staff_id", "note")},
        )
        if action == "arrive":
            await _cancel_timers(session, call, "on_scene")
    elif action in ("resolve", "cancel"):
        outcome = body.get("outcome") or (
            "false_alarm" if action == "cancel" and body.get("false_alarm") else None
        )
        if action == "resolve" and outcome not in OUTCOMES:
            raise CallError(f"resolve needs an outcome: one of {', '.join(OUTCOMES)}", 422)
        if action == "cancel":
            outcome = outcome if outcome in OUTCOMES else "cancelled"
        note = body.get("note")
        assert new_status is not None
        await _close(
            session,
            call,
            status=CallStatus(new_status),
            outcome=str(outcome),
            now=now,
            actor=actor.name,
            kind=AuditKind.resolved if action == "resolve" else AuditKind.cancelled,
            detail={"note": note} if isinstance(note, str) else {},
            out=out,
        )
        return out
    elif action == "escalate":
        level = body.get("to", "street" if call.escalation_level == 0 else "county")
        if level not in ("street", "county"):
            raise CallError("escalate needs to: street or county", 422)
        await escalate(
            session, call, level=str(level), now=now, actor=actor.name, reason="by_hand", ctx=ctx, out=out
        )
    elif action == "note":
        text = body.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > 4000:
            raise CallError("note needs text (1–4000 characters)", 422)
        await audit.append(
            session,
            kind=AuditKind.note.value,
            at=now,
            actor=actor.name,
            call_id=call.id,
            station_id=station,
            detail={"text": text.strip()},
        )
    elif action == "handoff":
        to = body.get("to")
        if to not in ("120", "110", "119"):
            raise CallError("handoff needs to: 120 (medical), 110 (police) or 119 (fire)", 422)
        await audit.append(
            session,
            kind=AuditKind.handoff.value,
            at=now,
            actor=actor.name,
            call_id=call.id,
            station_id=station,
            detail={"to": to, "note": body.get("note") if isinstance(body.get("note"), str) else None},
        )
    if action in _DEVICE_STATE:
        for dev_id, ev_id in await _call_device_events(session, call.id):
            out.device_notices.append(DeviceNotice(call.id, dev_id, ev_id, _DEVICE_STATE[action]))
    return out


async def _set_status(session: AsyncSession, call: Call, status: str, *, expect: Sequence[str]) -> None:
    res = await session.execute(
        update(Call)
        .where(Call.id == call.id, Call.status.in_(list(expect)), Call.version == call.version)
        .values(status=status, version=call.version + 1)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise CallError("the call changed meanwhile; reload it", 409)
    call.status, call.version = status, call.version + 1


async def _cancel_timers(session: AsyncSession, call: Call, change: esc.ProgressChange) -> None:
    steps = esc.cancelled_by(change, esc.from_snapshot(call.policy))
    if steps:
        await session.execute(
            update(Timer)
            .where(Timer.call_id == call.id, Timer.status == "pending", Timer.step.in_(sorted(steps)))
            .values(status="cancelled")
        )


async def _dispatch(
    session: AsyncSession,
    call: Call,
    staff_ids: list[str],
    *,
    actor: Actor,
    now: datetime,
    ack_allowed: Sequence[str],
) -> None:
    staff = (await session.scalars(select(Staff).where(Staff.id.in_(staff_ids)))).all()
    found = {s.id: s for s in staff}
    missing = [s for s in staff_ids if s not in found]
    if missing:
        raise CallError(f"unknown staff: {', '.join(missing)}", 422)
    off = [s.id for s in staff if not s.on_duty]
    if off:
        raise CallError(f"not on duty: {', '.join(off)}", 409)
    busy = list(
        await session.scalars(
            select(Assignment.staff_id).where(Assignment.staff_id.in_(staff_ids), Assignment.active.is_(True))
        )
    )
    if busy:
        raise CallError(f"already on a call: {', '.join(sorted(set(busy)))}", 409)
    if call.status in ("open", "assigned"):
        # sending someone is the operator's answer: record the acknowledgement too
        await audit.append(
            session,
            kind=AuditKind.acknowledged.value,
            at=now,
            actor=actor.name,
            call_id=call.id,
            station_id=call.station_id,
            detail={"user_id": actor.user_id, "implied_by": "dispatch"},
        )
        await _cancel_timers(session, call, "acknowledged")
    if call.status in ("open", "assigned", "acknowledged"):
        await _set_status(session, call, "dispatched", expect=ack_allowed)
    for s in staff:
        session.add(Assignment(call_id=call.id, staff_id=s.id, active=True, state="dispatched"))
        await audit.append(
            session,
            kind=AuditKind.responder_dispatched.value,
            at=now,
            actor=actor.name,
            call_id=call.id,
            station_id=s.station_id,
            detail={"staff_id": s.id, "name": s.name, "phone": s.phone},
        )


async def escalate(
    session: AsyncSession,
    call: Call,
    *,
    level: str,
    now: datetime,
    actor: str,
    reason: str,
    ctx: DispatchContext,
    out: Outcome,
) -> bool:
    """Hand the call up the tree (street centre, then county). Returns False when it is
    already there."""
    want = 1 if level == "street" else 2
    if call.escalation_level >= want:
        return False
    stations = await station_nodes(session)
    base = call.station_id
    if base is None:
        home = await session.get(Home, call.home_id)
        base = home.station_id if home else None
    target = (
        routing.escalation_target(stations, base, "street" if level == "street" else "county")
        if base
        else None
    )
    if target is None:
        await audit.append(
            session,
            kind=AuditKind.escalated.value,
            at=now,
            actor=actor,
            call_id=call.id,
            station_id=call.station_id,
            detail={"to": level, "reason": reason, "result": "NO_STATION_AVAILABLE"},
        )
        return False
    node = stations[target]
    await session.execute(
        update(Call)
        .where(Call.id == call.id)
        .values(station_id=target, tier=node.tier, escalation_level=want, version=Call.version + 1)
    )
    await audit.append(
        session,
        kind=AuditKind.escalated.value,
        at=now,
        actor=actor,
        call_id=call.id,
        station_id=target,
        detail={"from_station_id": call.station_id, "to_station_id": target, "to": level, "reason": reason},
    )
    call.station_id, call.tier, call.escalation_level = target, node.tier, want
    await queue_notification(
        session,
        call,
        purpose="alert_station",
        target=f"station:{target}",
        now=now,
        ctx=ctx,
        body={"reason": f"escalated_{level}"},
        out=out,
    )
    out.calls.add(call.id)
    return True


# --------------------------------------------------------------------------- timers


def _schedule(session: AsyncSession, call: Call, planned: esc.PlannedTimer) -> None:
    """A pending timer of the call's live escalation chain (its generation)."""
    session.add(
        Timer(
            call_id=call.id,
            generation=call.generation,
            step=planned.step,
            action=planned.action,
            due_at=planned.due_at,
            status="pending",
            repeat=planned.repeat,
        )
    )


async def claim_due_timers(session: AsyncSession, now: datetime, limit: int) -> list[Timer]:
    stmt = (
        select(Timer)
        .where(Timer.status == "pending", Timer.due_at <= now)
        .order_by(Timer.due_at, Timer.id)
        .limit(limit)
    )
    if _is_pg(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


def progress_of(call: Call) -> esc.Progress:
    return esc.Progress(
        acknowledged=call.status not in ("open", "assigned"),
        on_scene=call.status in ("on_scene", "resolved"),
        closed=call.status in ("resolved", "cancelled"),
        escalation_level=call.escalation_level,
    )


async def take_due_timers(
    session: AsyncSession, timers: Sequence[Timer], *, now: datetime, worker: str
) -> tuple[set[int], dict[int, Call]]:
    """For a batch of claimed timers, after the chain lock: mark them ``firing`` with one
    conditional UPDATE (the ids returned are ours: a timer another copy took first is not
    pending any more) and lock their calls with one SELECT. What ``fire_timer`` does per
    timer otherwise, in two statements for the batch."""
    if not timers:
        return set(), {}
    ids = [t.id for t in timers]
    owned = set(
        (
            await session.scalars(
                update(Timer)
                .where(Timer.id.in_(ids), Timer.status == "pending")
                .values(status="firing", fired_at=now, fired_by=worker)
                .returning(Timer.id)
                .execution_options(synchronize_session=False)
            )
        ).all()
    )
    stmt = select(Call).where(Call.id.in_(sorted({t.call_id for t in timers}))).order_by(Call.id)
    if _is_pg(session):
        stmt = stmt.with_for_update()
    by_id = {c.id: c for c in (await session.scalars(stmt)).all()}
    return owned, by_id


async def fire_timer(
    session: AsyncSession,
    timer: Timer,
    *,
    now: datetime,
    worker: str,
    ctx: DispatchContext,
    taken: tuple[set[int], dict[int, Call]] | None = None,
) -> Outcome:
    """Fire one claimed timer exactly once, or retire it as stale. ``taken`` is what
    take_due_timers returned for the batch; without it the timer is taken here."""
    out = Outcome()
    if taken is None:
        call = await _lock_call(session, timer.call_id)
        res = await session.execute(
            update(Timer)
            .where(Timer.id == timer.id, Timer.status == "pending")
            .values(status="firing", fired_at=now, fired_by=worker)
        )
        mine = res.rowcount == 1  # type: ignore[attr-defined]
    else:
        call = taken[1].get(timer.call_id)
        mine = timer.id in taken[0]
    if not mine or call is None:
        return out  # another copy had it
    snap = esc.from_snapshot(call.policy)
    if timer.generation != call.generation:
        decision = esc.TimerDecision(fire=False, stale_reason="superseded escalation chain", next=None)
    else:
        decision = esc.on_timer_due(snap, timer.step, timer.repeat, timer.due_at, progress_of(call))
    if not decision.fire:
        await session.execute(update(Timer).where(Timer.id == timer.id).values(status="stale"))
        await audit.append(
            session,
            kind=AuditKind.timer_stale.value,
            at=now,
            actor=worker,
            call_id=call.id,
            station_id=call.station_id,
            detail={
                "step": timer.step,
                "action": timer.action,
                "repeat": timer.repeat,
                "reason": decision.stale_reason,
                "due_at": timer.due_at.isoformat(),
            },
        )
        return out
    await session.execute(update(Timer).where(Timer.id == timer.id).values(status="fired"))
    late_ms = round((now - timer.due_at).total_seconds() * 1000)
    base = {
        "step": timer.step,
        "repeat": timer.repeat,
        "due_at": timer.due_at.isoformat(),
        "late_ms": late_ms,
    }
    action = timer.action
    if action in ("alert_station", "remind"):
        kind = AuditKind.alerted if action == "alert_station" else AuditKind.reminder
        await audit.append(
            session,
            kind=kind.value,
            at=now,
            actor=worker,
            call_id=call.id,
            station_id=call.station_id,
            detail=base,
        )
        await queue_notification(
            session,
            call,
            purpose=action,
            target=f"station:{call.station_id}",
            now=now,
            ctx=ctx,
            body=base,
            out=out,
        )
    elif action in ("escalate_street", "escalate_county"):
        await escalate(
            session,
            call,
            level=action.removeprefix("escalate_"),
            now=now,
            actor=worker,
            reason=f"not acknowledged (step {timer.step})",
            ctx=ctx,
            out=out,
        )
    elif action == "notify_contacts":
        contacts = (
            (
                await session.scalars(
                    select(Contact).where(Contact.resident_id == call.resident_id).order_by(Contact.priority)
                )
            ).all()
            if call.resident_id
            else []
        )
        await audit.append(
            session,
            kind=AuditKind.alerted.value,
            at=now,
            actor=worker,
            call_id=call.id,
            station_id=call.station_id,
            detail={**base, "contacts": len(contacts), "purpose": "notify_contacts"},
        )
        for c in contacts:
            await queue_notification(
                session,
                call,
                purpose="notify_contact",
                target=f"phone:{c.phone}",
                now=now,
                ctx=ctx,
                body={**base, "name": c.name, "relation": c.relation, "order": c.priority},
                out=out,
            )
    elif action == "alert_supervisor":
        sups = await supervisors_for(session, call.station_id)
        await audit.append(
            session,
            kind=AuditKind.alerted.value,
            at=now,
            actor=worker,
            call_id=call.id,
            station_id=call.station_id,
            detail={**base, "purpose": "alert_supervisor", "supervisors": sups},
        )
        for username in sups or ["supervisor:unassigned"]:
            await queue_notification(
                session,
                call,
                purpose="alert_supervisor",
                target=f"user:{username}",
                now=now,
                ctx=ctx,
                body=base,
                out=out,
            )
    if decision.next is not None:
        n = decision.next
        _schedule(session, call, n)
    out.calls.add(call.id)
    return out


async def supervisors_for(session: AsyncSession, station_id: str | None) -> list[str]:
    """Supervisors whose scope holds the station: its own, its street's, the county's."""
    chain: list[str] = []
    sid = station_id
    while sid is not None and len(chain) < 10:
        chain.append(sid)
        sid = await session.scalar(select(Station.parent_id).where(Station.id == sid))
    if not chain:
        return []
    rows = await session.scalars(
        select(User.username)
        .where(User.role == "supervisor", User.active.is_(True), User.station_id.in_(chain))
        .order_by(User.username)
    )
    return list(rows)


async def queue_notification(
    session: AsyncSession,
    call: Call,
    *,
    purpose: str,
    target: str,
    now: datetime,
    ctx: DispatchContext,
    body: Mapping[str, Any],
    out: Outcome,
) -> None:
    session.add(
        Notification(
            call_id=call.id,
            channel=ctx.notifier_channel,
            purpose=purpose,
            target=target,
            body={**body, "call_id": call.id, "priority": call.priority, "station_id": call.station_id},
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    out.notifications += 1


async def queue_device_notices(session: AsyncSession, notices: Sequence[DeviceNotice], now: datetime) -> None:
    """Device acks go through the same outbox as notifications, so one written in an API
    process is still published (by a dispatcher) after a crash."""
    for n in notices:
        session.add(
            Notification(
                call_id=n.call_id,
                channel="mqtt",
                purpose="device_ack",
                target=f"device:{n.device_id}",
                body={"event_id": n.event_id, "state": n.state},
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )


# --------------------------------------------------------------------------- watchdog


async def watchdog(session: AsyncSession, *, now: datetime, actor: str) -> list[int]:
    """Open calls whose escalation has no live timer although a step is still due:
    re-plan the missing steps and record the repair. Returns the repaired call ids."""
    pending = select(Timer.call_id).where(Timer.status.in_(("pending", "firing")))
    calls = (
        await session.scalars(
            select(Call)
            .where(Call.status.in_([s.value for s in OPEN_STATUSES]), Call.id.not_in(pending))
            .limit(500)
        )
    ).all()
    repaired: list[int] = []
    for call in calls:
        snap = esc.from_snapshot(call.policy)
        # cancelled timers are not "done": a step cancelled by mistake must come back,
        # and on_timer_due below drops the ones whose condition really holds
        done: dict[int, int] = {}
        for step, repeat in (
            await session.execute(
                select(Timer.step, Timer.repeat).where(
                    Timer.call_id == call.id, Timer.status.in_(("fired", "stale"))
                )
            )
        ).all():
            done[step] = max(done.get(step, -1), repeat)
        opened = (
            await session.scalar(
                select(func.min(AuditRow.at)).where(
                    AuditRow.call_id == call.id, AuditRow.kind == AuditKind.call_opened.value
                )
            )
            or now
        )
        missing: list[esc.PlannedTimer] = []
        for planned in esc.initial_timers(snap, opened):
            if planned.step in done:
                if snap.steps[planned.step].repeat_every_s is None:
                    continue  # a one-off step that already ran
                planned = esc.PlannedTimer(
                    step=planned.step, action=planned.action, due_at=now, repeat=done[planned.step] + 1
                )
            else:
                planned = esc.PlannedTimer(
                    step=planned.step,
                    action=planned.action,
                    due_at=max(planned.due_at, now),
                    repeat=planned.repeat,
                )
            if esc.on_timer_due(snap, planned.step, planned.repeat, planned.due_at, progress_of(call)).fire:
                missing.append(planned)
        if not missing:
            continue
        for planned in missing:
            _schedule(session, call, planned)
        await audit.append(
            session,
            kind=AuditKind.watchdog_repair.value,
            at=now,
            actor=actor,
            call_id=call.id,
            station_id=call.station_id,
            detail={"replanned_steps": [p.step for p in missing]},
        )
        repaired.append(call.id)
    return repaired


# --------------------------------------------------------------------------- reading


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


async def call_times(session: AsyncSession, call_ids: Sequence[int]) -> dict[int, CallTimes]:
    """Response times, derived from the audit rows (never stored on the call)."""
    if not call_ids:
        return {}
    rows = await session.execute(
        select(AuditRow.call_id, AuditRow.kind, func.min(AuditRow.at), func.count())
        .where(
            AuditRow.call_id.in_(list(call_ids)),
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
        at = first if first.tzinfo else first.replace(tzinfo=UTC)
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


def scope_filter(scope: frozenset[str] | None) -> Any:
    return True if scope is None else Call.station_id.in_(sorted(scope))


__all__ = [
    "ACTIONS",
    "OUTCOMES",
    "Actor",
    "CallError",
    "CallTimes",
    "DeviceNotice",
    "DispatchContext",
    "Outcome",
    "act",
    "call_times",
    "claim_due_timers",
    "claim_events",
    "fire_timer",
    "handle_event",
    "take_due_timers",
    "watchdog",
]

_ = and_  # re-exported helpers for query builders elsewhere

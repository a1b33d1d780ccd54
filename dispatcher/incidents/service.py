"""Mass offline incidents: many devices offline at once become one call for their area.

dispatcher.incidents.mass_offline decides; this module loads what it needs
(dispatcher/incidents/reads.py) and applies it inside the intake's transaction
(dispatcher/calls/intake.py calls :func:`on_offline` for each ``offline`` event and
:func:`on_restore` for each ``online``).

The incident is an ordinary call of class ``mass_offline``: routed to the area's
station, priority P4 (device trouble), its own escalation policy (config/escalation.yaml,
``mass_offline``), one line in the queue. Its devices are rows of ``incident_devices``;
each device that joins or comes back is one ``event_joined`` audit row with the running
counts, so the call's timeline lists the devices and how many are back. Per-home trouble
calls opened for the same outage before the threshold was reached are closed as
``merged_into_incident`` (an audit row on each names the incident), as are incidents of
smaller areas the outage outgrew. When every device is back the incident resolves
itself (outcome ``restored``). Devices still offline keep it open: the station works
through the list and closes it by hand (docs/operations.md, "Mass offline incidents").

Several dispatcher copies may run this at once. On PostgreSQL the area's station row is
locked before an incident opens (so two copies cannot open two for one area) and the
incident's call row before its devices change (so the last restore is seen by the copy
that resolves it); folded calls are taken with SKIP LOCKED, and one a copy could not take
is folded by a later join.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import DeviceEvent
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.calls import escalation as esc
from dispatcher.calls import lifecycle, timers
from dispatcher.calls.actions import close_call, insert_call
from dispatcher.calls.context import Batch, DispatchContext, Outcome, is_pg
from dispatcher.calls.dispatch_config import MASS_OFFLINE
from dispatcher.calls.lifecycle import CallStatus
from dispatcher.calls.models import Call, CallEvent
from dispatcher.incidents import mass_offline as mo
from dispatcher.incidents import reads
from dispatcher.incidents.models import IncidentDevice, MassOfflineIncident
from dispatcher.incidents.reads import OPEN_VALUES, AreaBatch
from dispatcher.registry.models import Home, Station

__all__ = ["EVENT_CLASS", "MERGED", "AreaBatch", "MassOfflineIntake", "on_offline", "on_restore"]

EVENT_CLASS = MASS_OFFLINE
MERGED = "merged_into_incident"  # the outcome of a call folded into an incident
_LEVEL_OF_TIER = {"community": 0, "street": 1, "county": 2}


@dataclass(frozen=True)
class _Run:
    """The transaction an incident is changed in: its reads, and what it changed."""

    batch: Batch
    areas: AreaBatch
    actor: str
    out: Outcome
    now: datetime


# --------------------------------------------------------------------------- offline


async def on_offline(
    session: AsyncSession,
    *,
    ev: DeviceEvent,
    ctx: DispatchContext,
    batch: Batch,
    areas: AreaBatch,
    actor: str,
    out: Outcome,
    now: datetime,
) -> int | None:
    """The incident this offline event joined (or opened), or None: handle it as today
    (a trouble call for the home)."""
    cfg: mo.MassOfflineConfig = ctx.dispatch_cfg.mass_offline
    if not cfg.enabled or ev.type != "offline":
        return None
    station_id = await reads.station_of(session, home_id=ev.home_id, batch=batch)
    if station_id is None:
        return None
    run = _Run(batch=batch, areas=areas, actor=actor, out=out, now=now)
    stations = await reads.stations(session, batch=batch)
    decision = await _decide(session, run, ev, station_id, stations, cfg)
    if decision is None:
        return None
    if isinstance(decision, mo.Open):
        call_id = await _open_incident(session, run, ev, decision, ctx, stations)
    else:
        call_id = decision.call_id
        if not await reads.lock_incident(session, areas=run.areas, call_id=call_id):
            # closed meanwhile: decide again without it (at most once per incident)
            return await on_offline(
                session, ev=ev, ctx=ctx, batch=batch, areas=areas, actor=actor, out=out, now=now
            )
        await _sweep_leftovers(session, run, call_id, stations)
    await _add_device(
        session, run, call_id, device_id=ev.device_id, home_id=ev.home_id, event_pk=ev.id, at=ev.received_at
    )
    out.calls.add(call_id)
    return call_id


async def _decide(
    session: AsyncSession,
    run: _Run,
    ev: DeviceEvent,
    station_id: str,
    stations: Mapping[str, mo.StationRef],
    cfg: mo.MassOfflineConfig,
) -> mo.Decision:
    w = timedelta(seconds=cfg.window_s)
    m = timedelta(seconds=cfg.outage_margin_s)
    at = ev.received_at
    event = mo.Sighting(ev.device_id, ev.home_id, station_id, at)
    outages = await reads.outages(session, areas=run.areas, lo=at - m, hi=at + m)
    open_ = await reads.open_incidents(session, areas=run.areas)
    # the offline events around it: the window either side, and an outage's whole span
    lo, hi = at - w, at + w
    for o in outages:
        lo = min(lo, o.lost_at - m)
        hi = max(hi, (o.back_at or at) + m)
    # A batch of a storm is many offline events of the same station within a second:
    # one that joined an incident decides for the others of its station and second
    # (the open incidents unchanged), instead of counting the same cluster again.
    seen = run.areas.memo.get(station_id)
    if seen is not None and abs((at - seen[0]).total_seconds()) <= 1.0 and seen[1] == frozenset(open_):
        return seen[2]
    recent = await reads.sightings(session, areas=run.areas, lo=lo, hi=hi)
    decision = mo.classify(event, recent, stations, outages, list(open_.values()), cfg)
    if isinstance(decision, mo.Join):
        run.areas.memo[station_id] = (at, frozenset(open_), decision)
    return decision


async def _open_incident(
    session: AsyncSession,
    run: _Run,
    ev: DeviceEvent,
    decision: mo.Open,
    ctx: DispatchContext,
    stations: Mapping[str, mo.StationRef],
) -> int:
    area_id = decision.area_station_id
    existing = await reads.existing_incident(session, areas=run.areas, area_id=area_id)
    if existing is not None:
        return existing
    station = await session.get(Station, area_id)
    assert station is not None  # the decision names a station of the tree it was given
    priority, p_reasons = "P4", ("TROUBLE_ONLY",)  # device trouble: nobody reported hurt
    policy = ctx.policies.select(EVENT_CLASS, priority)
    if policy.match.catch_all:
        # a policy file without a mass_offline policy: treat it like device trouble,
        # not like the catch-all's emergency (20-second reminders for a power cut)
        policy = ctx.policies.select("trouble", priority)
    area_kind = station.area if station.area in ("urban", "rural") else "urban"
    snap = esc.snapshot(policy, travel_limit_s=ctx.dispatch_cfg.routing.limit_min(area_kind) * 60)
    values: dict[str, Any] = {
        "status": CallStatus.assigned.value,
        "priority": priority,
        "priority_reasons": list(p_reasons),
        "event_class": EVENT_CLASS,
        # the home of the event that opened it: calls need a home; the devices and homes
        # of the incident are its incident_devices rows
        "home_id": ev.home_id,
        "resident_id": None,
        "station_id": area_id,
        "tier": station.tier,
        "route_reasons": ["MASS_OFFLINE_AREA"],
        "lat": station.lat,
        "lon": station.lon,
        "policy": snap,
        # already at the area's level: a street's incident does not "escalate" to itself
        "escalation_level": _LEVEL_OF_TIER.get(station.tier, 0),
    }
    call = await insert_call(
        session,
        values=values,
        ev=ev,
        received={"device_id": ev.device_id, "event_id": ev.event_id, "type": ev.type, "event_pk": ev.id},
        opened={
            "event_class": EVENT_CLASS,
            "policy": policy.name,
            "home_id": ev.home_id,
            "priority": priority,
            "priority_reasons": list(p_reasons),
            "area_station_id": area_id,
            "name": station.name,  # the area, shown on the timeline with the cause
            "cause": decision.cause,
            "label": mo.CAUSES[decision.cause],
            "outage": await reads.outage_detail(session, outage_id=decision.outage_id),
            "devices_in_window": decision.devices,
        },
        assigned={"station_id": area_id, "tier": station.tier, "reasons": ["MASS_OFFLINE_AREA"]},
        actor=run.actor,
        now=run.now,
    )
    row = MassOfflineIncident(
        call_id=call.id,
        area_station_id=area_id,
        cause=decision.cause,
        outage_id=decision.outage_id,
        opened_at=run.now,
        since=decision.fold_from,
        last_offline_at=ev.received_at,
    )
    session.add(row)
    run.areas.rows[call.id] = row
    # its opening step (alert the area's station) fires with the call, as any call's
    await timers.open_escalation(
        session, call, worker=run.actor, ctx=ctx, batch=run.batch, out=run.out, now=run.now
    )
    await session.flush()  # incident_devices rows refer to it
    run.areas.locked.add(call.id)  # ours until the commit
    inc = mo.OpenIncident(call.id, area_id, decision.cause, decision.outage_id, ev.received_at)
    run.areas.opened()[call.id] = inc
    run.out.calls.add(call.id)
    await _fold_smaller_incidents(session, run, call.id, area_id, stations)
    await _fold_home_calls(session, run, call.id, area_id, stations, decision.fold_from, decision.fold_to)
    run.areas.swept.add(call.id)
    return int(call.id)


def _subtree(stations: Mapping[str, mo.StationRef], area_id: str) -> list[str]:
    return sorted(s for s in stations if mo.in_subtree(stations, s, area_id))


async def _merge(session: AsyncSession, run: _Run, call: Call, incident_id: int, reason: str) -> None:
    """Close a call folded into the incident."""
    await close_call(
        session,
        call,
        status=CallStatus.cancelled,
        outcome=MERGED,
        actor=run.actor,
        kind=AuditKind.cancelled,
        detail={"incident_call_id": incident_id, "reason": reason},
        out=run.out,
        now=run.now,
    )


async def _fold_home_calls(
    session: AsyncSession,
    run: _Run,
    incident_id: int,
    area_id: str,
    stations: Mapping[str, mo.StationRef],
    since: datetime,
    until: datetime | None,
) -> int:
    """Close the per-home trouble calls about offline devices of the area, received from
    ``since`` (to ``until``), that nobody has taken up yet, and take their devices in."""
    await session.flush()  # the batch's calls and call events so far (intake runs without autoflush)
    offline_only = ~(
        select(CallEvent.call_id)
        .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
        .where(CallEvent.call_id == Call.id, DeviceEvent.type != "offline")
        .exists()
    )
    untouched = [s.value for s in lifecycle.INITIAL_STATUSES]  # nobody has taken it up
    conds = [
        Call.status.in_(untouched),
        Call.event_class == "trouble",
        DeviceEvent.type == "offline",
        DeviceEvent.received_at >= since,
        Home.station_id.in_(_subtree(stations, area_id)),
        offline_only,
    ]
    if until is not None:
        conds.append(DeviceEvent.received_at <= until)
    found = (
        await session.execute(
            select(
                Call.id, DeviceEvent.id, DeviceEvent.device_id, DeviceEvent.home_id, DeviceEvent.received_at
            )
            .join(CallEvent, CallEvent.call_id == Call.id)
            .join(DeviceEvent, DeviceEvent.id == CallEvent.event_pk)
            .join(Home, Home.id == Call.home_id)
            .where(and_(*conds))
            .order_by(Call.id, DeviceEvent.id)
        )
    ).all()
    if not found:
        return 0
    ids = sorted({r[0] for r in found})
    stmt = select(Call).where(Call.id.in_(ids)).order_by(Call.id)
    if is_pg(session):
        stmt = stmt.with_for_update(skip_locked=True)  # another copy's: a later join folds it
    taken = {c.id: c for c in (await session.scalars(stmt)).all() if c.status in untouched}
    for call in taken.values():
        await _merge(session, run, call, incident_id, "mass offline")
    for call_id, event_pk, device_id, home_id, at in found:
        if call_id in taken:
            await _add_device(
                session,
                run,
                incident_id,
                device_id=device_id,
                home_id=home_id,
                event_pk=event_pk,
                at=at,
                merged_call_id=call_id,
            )
    return len(taken)


async def _fold_smaller_incidents(
    session: AsyncSession,
    run: _Run,
    incident_id: int,
    area_id: str,
    stations: Mapping[str, mo.StationRef],
) -> None:
    """Incidents of areas inside this one (the outage outgrew them) hand over their
    devices and close as merged."""
    inner = [s for s in _subtree(stations, area_id) if s != area_id]
    if not inner:
        return
    await session.flush()  # devices this transaction added
    stmt = (
        select(Call)
        .join(MassOfflineIncident, MassOfflineIncident.call_id == Call.id)
        .where(
            MassOfflineIncident.area_station_id.in_(inner),
            Call.status.in_(OPEN_VALUES),
            Call.id != incident_id,
        )
        .order_by(Call.id)
    )
    if is_pg(session):
        stmt = stmt.with_for_update(skip_locked=True)
    for child in (await session.scalars(stmt)).all():
        await _take_over(session, run, child, incident_id, area_id)


async def _take_over(session: AsyncSession, run: _Run, child: Call, incident_id: int, area_id: str) -> None:
    """The devices of a smaller incident move to the larger one; the smaller one closes."""
    moved = list(
        (
            await session.scalars(select(IncidentDevice.device_id).where(IncidentDevice.call_id == child.id))
        ).all()
    )
    held = set(
        (
            await session.scalars(
                select(IncidentDevice.device_id).where(
                    IncidentDevice.call_id == incident_id, IncidentDevice.device_id.in_(moved)
                )
            )
        ).all()
    )
    await session.execute(
        update(IncidentDevice)
        .where(IncidentDevice.call_id == child.id, IncidentDevice.device_id.not_in(held))
        .values(call_id=incident_id)
        .execution_options(synchronize_session=False)
    )
    await _merge(session, run, child, incident_id, "the outage covers a larger area")
    run.areas.forget(child.id)
    run.areas.members.pop(child.id, None)
    run.areas.members.pop(incident_id, None)  # read again, with the devices moved in
    total, back = reads.tally(await reads.members(session, areas=run.areas, call_id=incident_id))
    detail = {
        "merged_call_id": child.id,
        "devices": sorted(set(moved) - held),
        "devices_total": total,
        "devices_back": back,
    }
    await _joined(session, run, incident_id, area_id, detail)


async def _joined(
    session: AsyncSession, run: _Run, incident_id: int, station_id: str | None, detail: Mapping[str, Any]
) -> None:
    """A device (or a folded incident's devices) joined the incident, or came back."""
    await audit.append(
        session,
        kind=AuditKind.event_joined.value,
        at=run.now,
        actor=run.actor,
        call_id=incident_id,
        station_id=station_id,
        detail=detail,
    )


async def _sweep_leftovers(
    session: AsyncSession, run: _Run, incident_id: int, stations: Mapping[str, mo.StationRef]
) -> None:
    """Once per transaction and incident: fold what an opening copy had to skip (calls
    another copy held locked at the time)."""
    if incident_id in run.areas.swept:
        return
    run.areas.swept.add(incident_id)
    row = await session.get(MassOfflineIncident, incident_id)
    if row is None:
        return
    await _fold_smaller_incidents(session, run, incident_id, row.area_station_id, stations)
    await _fold_home_calls(session, run, incident_id, row.area_station_id, stations, row.since, None)


async def _add_device(
    session: AsyncSession,
    run: _Run,
    incident_id: int,
    *,
    device_id: str,
    home_id: str,
    event_pk: int,
    at: datetime,
    merged_call_id: int | None = None,
) -> None:
    """The device is offline as part of the incident (again, if it had come back)."""
    members = await reads.members(session, areas=run.areas, call_id=incident_id)
    known = members.get(device_id)
    if known == (True, event_pk):
        return  # already in (a folded call's event seen again)
    if known is None:
        # written with the batch's other rows at its flush: a storm is thousands of these
        session.add(
            IncidentDevice(
                call_id=incident_id,
                device_id=device_id,
                home_id=home_id,
                offline_event_pk=event_pk,
                offline_at=at,
                back_at=None,
                restore_event_pk=None,
                merged_call_id=merged_call_id,
            )
        )
    else:
        await session.flush()  # the row may be one this transaction added
        await session.execute(
            update(IncidentDevice)
            .where(IncidentDevice.call_id == incident_id, IncidentDevice.device_id == device_id)
            .values(offline_event_pk=event_pk, offline_at=at, back_at=None, restore_event_pk=None)
        )
    members[device_id] = (True, event_pk)
    _index_device(run.areas, incident_id, device_id)
    inc = await _note_last_offline(session, run, incident_id, at)
    total, back = reads.tally(members)
    detail: dict[str, Any] = {
        "device_id": device_id,
        "home_id": home_id,
        "type": "offline",
        "event_pk": event_pk,
        "devices_total": total,
        "devices_back": back,
    }
    if merged_call_id is not None:
        detail["merged_call_id"] = merged_call_id
    await _joined(session, run, incident_id, inc.area_station_id if inc is not None else None, detail)


def _index_device(areas: AreaBatch, incident_id: int, device_id: str) -> None:
    """Keep the restore index current with a device that went (again) offline."""
    if areas.index is None:
        return
    if incident_id not in areas.index[1]:
        areas.index = None  # an incident it does not hold: read again when needed
    elif incident_id not in areas.index[0].setdefault(device_id, []):
        areas.index[0][device_id].append(incident_id)


async def _note_last_offline(
    session: AsyncSession, run: _Run, incident_id: int, at: datetime
) -> mo.OpenIncident | None:
    """The cluster goes on while offline events keep coming: move its last one forward."""
    inc = run.areas.open.get(incident_id) if run.areas.open is not None else None
    if inc is None or at > inc.last_offline_at:
        last = max(at, inc.last_offline_at) if inc is not None else at
        row = await reads.incident_row(session, areas=run.areas, call_id=incident_id)
        if row is not None and at > row.last_offline_at:
            row.last_offline_at = at  # flushed with the batch
        if inc is not None:
            run.areas.opened()[incident_id] = mo.OpenIncident(
                inc.call_id, inc.area_station_id, inc.cause, inc.outage_id, last
            )
    return inc


# --------------------------------------------------------------------------- restore


async def on_restore(
    session: AsyncSession,
    *,
    ev: DeviceEvent,
    batch: Batch,
    areas: AreaBatch,
    actor: str,
    out: Outcome,
    now: datetime,
) -> int | None:
    """Record an ``online`` on the open incident the device is part of; resolve the
    incident when its last device is back. The incident's id, or None."""
    if ev.type != "online":
        return None
    index, held = await reads.offline_index(session, areas=areas)
    found = [held[c] for c in index.pop(ev.device_id, []) if c in held]
    found = [c for c in found if reads.still_open(c.status)]
    if not found:
        return None
    run = _Run(batch=batch, areas=areas, actor=actor, out=out, now=now)
    for call in found:
        await _device_back(session, run, call, ev)
    return int(found[0].id)


async def _device_back(session: AsyncSession, run: _Run, call: Call, ev: DeviceEvent) -> None:
    run.areas.locked.add(call.id)
    await session.execute(
        update(IncidentDevice)
        .where(IncidentDevice.call_id == call.id, IncidentDevice.device_id == ev.device_id)
        .values(back_at=ev.received_at, restore_event_pk=ev.id)
    )
    members = await reads.members(session, areas=run.areas, call_id=call.id)
    gone = members.get(ev.device_id)
    members[ev.device_id] = (False, gone[1] if gone is not None else 0)
    total, back = reads.tally(members)
    detail = {
        "device_id": ev.device_id,
        "home_id": ev.home_id,
        "type": "online",
        "event_pk": ev.id,
        "devices_total": total,
        "devices_back": back,
    }
    await _joined(session, run, call.id, call.station_id, detail)
    run.out.calls.add(call.id)
    if back != total:
        return
    row = await session.get(MassOfflineIncident, call.id)
    cause = row.cause if row is not None else "mass_offline"
    await close_call(
        session,
        call,
        status=CallStatus.resolved,
        outcome="restored",
        actor=run.actor,
        kind=AuditKind.restored,
        detail={
            "cause": cause,
            "label": mo.CAUSES.get(cause, cause),
            "devices_total": total,
            "devices_back": back,
        },
        out=run.out,
        now=run.now,
    )
    run.areas.forget(call.id)


class MassOfflineIntake:
    """The intake's way in (dispatcher.calls.context.AreaEvents): one per batch, holding
    the batch's reads of the incidents."""

    def __init__(self) -> None:
        self.areas = AreaBatch()

    async def on_offline(
        self,
        session: AsyncSession,
        *,
        ev: DeviceEvent,
        ctx: DispatchContext,
        batch: Batch,
        actor: str,
        out: Outcome,
        now: datetime,
    ) -> int | None:
        return await on_offline(
            session, ev=ev, ctx=ctx, batch=batch, areas=self.areas, actor=actor, out=out, now=now
        )

    async def on_restore(
        self, session: AsyncSession, *, ev: DeviceEvent, batch: Batch, actor: str, out: Outcome, now: datetime
    ) -> int | None:
        return await on_restore(session, ev=ev, batch=batch, areas=self.areas, actor=actor, out=out, now=now)

"""Changing calls: an operator's actions (acknowledge, dispatch, en route, arrive,
resolve, cancel, escalate, note, hand off, call back), and the writes every path shares — a call
opened with its first facts and timers, a call closed, a call handed up the tree.

Which action is allowed in which status is dispatcher/calls/lifecycle.py's table; this
module applies it inside the caller's transaction, one audit row per fact. State changes
are conditional updates on the call's version, so two operators acting at once see one
win and the other told who was first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from carecall.core.one_of import one_of
from device_gateway.models import DeviceEvent
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.audit.models import AuditRow
from dispatcher.calls import bulk, lifecycle, paging, routing
from dispatcher.calls import escalation as esc
from dispatcher.calls.context import (
    OUTCOMES,
    Actor,
    Batch,
    CallError,
    DeviceNotice,
    DispatchContext,
    Outcome,
    is_pg,
    record,
)
from dispatcher.calls.lifecycle import CallAction, CallStatus, Refusal
from dispatcher.calls.models import Assignment, Call, Timer, TimerStatus
from dispatcher.calls.outbox import queue_notification
from dispatcher.calls.queries import call_device_events, station_nodes
from dispatcher.registry.models import Home, Staff

__all__ = [
    "CALLBACK_LINES",
    "CALLBACK_OUTCOMES",
    "act",
    "close_call",
    "escalate",
    "insert_call",
    "lock_call",
    "record_received",
    "schedule_timer",
]


# --------------------------------------------------------------------------- shared writes


def schedule_timer(
    session: AsyncSession,
    call: Call,
    planned: esc.PlannedTimer,
    *,
    fired_by: str | None = None,
    fired_at: datetime | None = None,
) -> None:
    """A pending timer of the call's live escalation chain (its generation); with
    ``fired_by``, the record of a step fired at once (a call's opening steps)."""
    bulk.add(
        session,
        Timer,
        {
            "call_id": call.id,
            "generation": call.generation,
            "step": planned.step,
            "action": planned.action,
            "due_at": planned.due_at,
            "status": (TimerStatus.pending if fired_by is None else TimerStatus.fired).value,
            "repeat": planned.repeat,
            "fired_at": fired_at,
            "fired_by": fired_by,
        },
    )


async def record_received(
    session: AsyncSession, *, ev: DeviceEvent, call_id: int, station_id: str | None, detail: Mapping[str, Any]
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


async def insert_call(
    session: AsyncSession,
    *,
    values: Mapping[str, Any],
    ev: DeviceEvent,
    received: Mapping[str, Any],
    opened: Mapping[str, Any],
    assigned: Mapping[str, Any],
    actor: str,
    now: datetime,
    call_id: int | None = None,
) -> Call:
    """A new call raised by ``ev`` (``values`` are its columns, its ``policy`` the
    snapshot it runs under) with its first facts — the event received, the call opened,
    where it went. Its escalation is the caller's to start, in the same transaction
    (dispatcher.calls.timers.open_escalation: the steps due at once fired, the others'
    timers stored)."""
    row = {"outcome": None, "generation": 1, "version": 1, "last_event_at": ev.received_at, **values}
    if call_id is not None:
        # its id drawn beforehand (the intake's batch, PostgreSQL): the call waits for the
        # transaction's next statement, so a storm's new calls go in as one INSERT
        call = Call(id=call_id, **row)
        bulk.add_object(session, call)
    else:
        # One INSERT … RETURNING for the call alone (its id is needed below); a session
        # flush here would also write every row the batch has added so far, a round of
        # inserts per call instead of one statement per table at commit.
        call = (await session.scalars(insert(Call).returning(Call), [row])).one()
    await record_received(session, ev=ev, call_id=call.id, station_id=call.station_id, detail=received)
    await record(session, call, AuditKind.call_opened, at=now, actor=actor, detail=opened)
    await record(session, call, AuditKind.assigned, at=now, actor=actor, detail=assigned)
    return call


async def lock_call(session: AsyncSession, *, call_id: int) -> Call | None:
    stmt = select(Call).where(Call.id == call_id)
    if is_pg(session):
        stmt = stmt.with_for_update()
    return (await session.scalars(stmt)).first()


async def close_call(
    session: AsyncSession,
    call: Call,
    *,
    status: CallStatus,
    outcome: str,
    actor: str,
    kind: AuditKind,
    detail: Mapping[str, Any],
    out: Outcome,
    now: datetime,
) -> None:
    """Close the call: responders released, pending timers cancelled, devices told."""
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
        update(Timer)
        .where(Timer.call_id == call.id, Timer.status == TimerStatus.pending.value)
        .values(status=TimerStatus.cancelled.value)
    )
    await record(session, call, kind, at=now, actor=actor, detail={**detail, "outcome": outcome})
    await paging.withdraw_pending(session, call_id=call.id, now=now, actor=actor)
    out.calls.add(call.id)
    for dev_id, ev_id in await call_device_events(session, call_id=call.id):
        out.device_notices.append(DeviceNotice(call.id, dev_id, ev_id, "resolved"))


async def escalate(
    session: AsyncSession,
    call: Call,
    *,
    level: str,
    actor: str,
    reason: str,
    ctx: DispatchContext,
    batch: Batch,
    out: Outcome,
    now: datetime,
) -> bool:
    """Hand the call up the tree (street centre, then county). Returns False when it is
    already there."""
    want = 1 if level == "street" else 2
    if call.escalation_level >= want:
        return False
    stations = await station_nodes(session, batch=batch)
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
        detail = {"to": level, "reason": reason, "result": "NO_STATION_AVAILABLE"}
        await record(session, call, AuditKind.escalated, at=now, actor=actor, detail=detail)
        return False
    node = stations[target]
    moved = {"from_station_id": call.station_id, "to_station_id": target, "to": level, "reason": reason}
    # The call's row is locked (the timer pass took it): the loaded object is the row, so
    # it is told the new values itself. Left to the ORM ("evaluate"), the UPDATE's criteria
    # were evaluated against every object the session holds: a timer pass holds hundreds,
    # and that was 17 % of the timer loop's CPU (docs/performance.md, sixth session).
    await session.execute(
        update(Call)
        .where(Call.id == call.id)
        .values(station_id=target, tier=node.tier, escalation_level=want, version=Call.version + 1)
        .execution_options(synchronize_session=False)
    )
    await record(session, call, AuditKind.escalated, at=now, actor=actor, detail=moved, station_id=target)
    for key, value in (
        ("station_id", target),
        ("tier", node.tier),
        ("escalation_level", want),
        ("version", call.version + 1),
    ):
        set_committed_value(call, key, value)
    await queue_notification(
        session,
        call,
        purpose=esc.TimerAction.alert_station.value,
        target=f"station:{target}",
        ctx=ctx,
        body={"reason": f"escalated_{level}"},
        out=out,
        now=now,
    )
    out.calls.add(call.id)
    return True


# --------------------------------------------------------------------------- operator actions


@dataclass(frozen=True)
class _Act:
    """One action being applied: the locked call, the status the table says it goes to."""

    call: Call
    action: CallAction
    after: CallStatus
    actor: Actor
    body: Mapping[str, Any]
    ctx: DispatchContext
    out: Outcome
    now: datetime


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


async def _refuse(session: AsyncSession, call: Call, refusal: Refusal) -> CallError:
    detail: dict[str, Any] = {"status": call.status}
    if refusal.action is CallAction.acknowledge:
        who = await _who_did(session, call.id, AuditKind.acknowledged.value)
        if who:
            detail.update(by=who[0], at=who[1].isoformat())
            return CallError(f"already acknowledged by {who[0]} at {who[1].isoformat()}", 409, detail)
    return CallError(refusal.message, 409, detail)


async def act(
    session: AsyncSession,
    *,
    call_id: int,
    action: CallAction | str,
    actor: Actor,
    body: Mapping[str, Any],
    ctx: DispatchContext,
    now: datetime,
    expected_version: int | None = None,
) -> Outcome:
    """Apply one operator action. Raises CallError (409 with who did it, when another
    operator was first; 422 for bad input)."""
    try:
        act_as = CallAction(action)
    except ValueError:
        raise CallError(f"unknown action {action!r}; one of {', '.join(CallAction)}", 404) from None
    # the call's row lock first, the chain's last, like the dispatcher's loops (which
    # lock calls and chain at commit): the same order everywhere, so no deadlock
    call = await lock_call(session, call_id=call_id)
    if call is None:
        raise CallError("no such call", 404)
    await audit.lock_head(session)
    after = lifecycle.next_status(CallStatus(call.status), act_as)
    if isinstance(after, Refusal):
        raise await _refuse(session, call, after)
    if expected_version is not None and expected_version != call.version:
        raise CallError("the call changed meanwhile; reload it", 409, {"version": call.version})
    out = Outcome(calls={call.id})
    step = _Act(call=call, action=act_as, after=after, actor=actor, body=body, ctx=ctx, out=out, now=now)
    await _HANDLERS[act_as](session, step)
    return out


async def _set_status(session: AsyncSession, step: _Act) -> None:
    """The table's next status, if the call is still as read (status and version)."""
    call = step.call
    if step.after == call.status:
        return
    res = await session.execute(
        update(Call)
        .where(
            Call.id == call.id,
            Call.status.in_(sorted(lifecycle.allowed_from(step.action))),
            Call.version == call.version,
        )
        .values(status=step.after.value, version=call.version + 1)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise CallError("the call changed meanwhile; reload it", 409)
    call.status, call.version = step.after.value, call.version + 1


async def _cancel_timers(
    session: AsyncSession, call: Call, change: esc.ProgressChange, *, actor: str, now: datetime
) -> None:
    # Someone has the call: the people still being paged are told it is taken.
    await paging.withdraw_pending(session, call_id=call.id, now=now, actor=actor)
    steps = esc.cancelled_by(change, esc.from_snapshot(call.policy))
    if steps:
        await session.execute(
            update(Timer)
            .where(
                Timer.call_id == call.id,
                Timer.status == TimerStatus.pending.value,
                one_of(Timer.step, sorted(steps)),
            )
            .values(status=TimerStatus.cancelled.value)
        )


async def _acknowledge(session: AsyncSession, step: _Act) -> None:
    await _set_status(session, step)
    detail = {"user_id": step.actor.user_id}
    await record(
        session, step.call, AuditKind.acknowledged, at=step.now, actor=step.actor.name, detail=detail
    )
    await _cancel_timers(session, step.call, "acknowledged", actor=step.actor.name, now=step.now)


async def _dispatch(session: AsyncSession, step: _Act) -> None:
    staff_ids = step.body.get("staff_ids")
    if not isinstance(staff_ids, list) or not staff_ids or not all(isinstance(s, str) for s in staff_ids):
        raise CallError("dispatch needs staff_ids: a list of on-duty staff ids", 422)
    staff = (await session.scalars(select(Staff).where(one_of(Staff.id, staff_ids)))).all()
    found = {s.id: s for s in staff}
    missing = [s for s in staff_ids if s not in found]
    if missing:
        raise CallError(f"unknown staff: {', '.join(missing)}", 422)
    off = [s.id for s in staff if not s.on_duty]
    if off:
        raise CallError(f"not on duty: {', '.join(off)}", 409)
    busy = list(
        await session.scalars(
            select(Assignment.staff_id).where(
                one_of(Assignment.staff_id, staff_ids), Assignment.active.is_(True)
            )
        )
    )
    if busy:
        raise CallError(f"already on a call: {', '.join(sorted(set(busy)))}", 409)
    call, actor, now = step.call, step.actor, step.now
    if not lifecycle.acknowledged(CallStatus(call.status)):
        # sending someone is the operator's answer: record the acknowledgement too
        detail = {"user_id": actor.user_id, "implied_by": "dispatch"}
        await record(session, call, AuditKind.acknowledged, at=now, actor=actor.name, detail=detail)
        await _cancel_timers(session, call, "acknowledged", actor=actor.name, now=now)
    await _set_status(session, step)
    for s in staff:
        session.add(Assignment(call_id=call.id, staff_id=s.id, active=True, state="dispatched"))
        detail = {"staff_id": s.id, "name": s.name, "phone": s.phone}
        await record(
            session,
            call,
            AuditKind.responder_dispatched,
            at=now,
            actor=actor.name,
            detail=detail,
            station_id=s.station_id,
        )


async def _move(session: AsyncSession, step: _Act) -> None:
    """En route or arrived: the call, its active responders and its devices follow."""
    call = step.call
    await _set_status(session, step)
    await session.execute(
        update(Assignment)
        .where(Assignment.call_id == call.id, Assignment.active.is_(True))
        .values(state=step.after.value)
    )
    kind = AuditKind.en_route if step.action is CallAction.en_route else AuditKind.on_scene
    detail = {k: v for k, v in step.body.items() if k in ("staff_id", "note")}
    await record(session, call, kind, at=step.now, actor=step.actor.name, detail=detail)
    if step.action is CallAction.arrive:
        await _cancel_timers(session, call, "on_scene", actor=step.actor.name, now=step.now)
    state = lifecycle.device_state_after(step.action)
    if state is not None:
        for dev_id, ev_id in await call_device_events(session, call_id=call.id):
            step.out.device_notices.append(DeviceNotice(call.id, dev_id, ev_id, state))


async def _close_by_hand(session: AsyncSession, step: _Act) -> None:
    body = step.body
    cancel = step.action is CallAction.cancel
    outcome = body.get("outcome") or ("false_alarm" if cancel and body.get("false_alarm") else None)
    if not cancel and outcome not in OUTCOMES:
        raise CallError(f"resolve needs an outcome: one of {', '.join(OUTCOMES)}", 422)
    if cancel:
        outcome = outcome if outcome in OUTCOMES else "cancelled"
    note = body.get("note")
    await close_call(
        session,
        step.call,
        status=step.after,
        outcome=str(outcome),
        actor=step.actor.name,
        kind=AuditKind.cancelled if cancel else AuditKind.resolved,
        detail={"note": note} if isinstance(note, str) else {},
        out=step.out,
        now=step.now,
    )


async def _escalate_by_hand(session: AsyncSession, step: _Act) -> None:
    level = step.body.get("to", "street" if step.call.escalation_level == 0 else "county")
    if level not in ("street", "county"):
        raise CallError("escalate needs to: street or county", 422)
    await escalate(
        session,
        step.call,
        level=str(level),
        actor=step.actor.name,
        reason="by_hand",
        ctx=step.ctx,
        batch=Batch(),
        out=step.out,
        now=step.now,
    )


async def _note(session: AsyncSession, step: _Act) -> None:
    text = step.body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > 4000:
        raise CallError("note needs text (1–4000 characters)", 422)
    detail = {"text": text.strip()}
    await record(session, step.call, AuditKind.note, at=step.now, actor=step.actor.name, detail=detail)


async def _handoff(session: AsyncSession, step: _Act) -> None:
    to = step.body.get("to")
    if to not in ("120", "110", "119"):
        raise CallError("handoff needs to: 120 (medical), 110 (police) or 119 (fire)", 422)
    note = step.body.get("note")
    detail = {"to": to, "note": note if isinstance(note, str) else None}
    await record(session, step.call, AuditKind.handoff, at=step.now, actor=step.actor.name, detail=detail)


# How ringing the resident back went; which line was rung (never the number: numbers are
# personal data and stay out of the record, which is kept for years).
CALLBACK_OUTCOMES = ("talked", "no_answer", "line_busy")
CALLBACK_LINES = ("home", "mobile")


async def _callback(session: AsyncSession, step: _Act) -> None:
    outcome, line = step.body.get("outcome"), step.body.get("to")
    if outcome not in CALLBACK_OUTCOMES:
        raise CallError(f"callback needs outcome: one of {', '.join(CALLBACK_OUTCOMES)}", 422)
    if line not in CALLBACK_LINES:
        raise CallError(f"callback needs to: the line rung, one of {', '.join(CALLBACK_LINES)}", 422)
    detail = {"outcome": outcome, "line": line, "user_id": step.actor.user_id}
    await record(session, step.call, AuditKind.called_back, at=step.now, actor=step.actor.name, detail=detail)


_HANDLERS: dict[CallAction, Callable[[AsyncSession, _Act], Awaitable[None]]] = {
    CallAction.acknowledge: _acknowledge,
    CallAction.dispatch: _dispatch,
    CallAction.en_route: _move,
    CallAction.arrive: _move,
    CallAction.resolve: _close_by_hand,
    CallAction.cancel: _close_by_hand,
    CallAction.escalate: _escalate_by_hand,
    CallAction.note: _note,
    CallAction.handoff: _handoff,
    CallAction.callback: _callback,
}

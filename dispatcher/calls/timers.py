"""Escalation timers coming due: claimed with row locks (SKIP LOCKED on PostgreSQL) so
exactly one dispatcher copy fires each, checked against the call's progress
(dispatcher/calls/escalation.py decides), then fired — an alert, a reminder, a climb up
the tree, the resident's contacts, the supervisors — or retired as stale.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.one_of import one_of
from dispatcher.audit.chain import AuditKind
from dispatcher.calls import contacts, ladder, lifecycle, paging
from dispatcher.calls import escalation as esc
from dispatcher.calls.actions import escalate, lock_call, schedule_timer
from dispatcher.calls.context import Batch, DispatchContext, Outcome, is_pg, record
from dispatcher.calls.failures import has_failed, still_to_do
from dispatcher.calls.lifecycle import CallStatus
from dispatcher.calls.models import Call, FailureKind, IntakeFailure, Timer, TimerStatus
from dispatcher.calls.outbox import area_of, area_supervisors, queue_notification, record_unassigned

__all__ = [
    "TakenTimers",
    "claim_due_timers",
    "claim_timer",
    "due_timer_ids",
    "finish_taken",
    "fire_timer",
    "next_timer_due",
    "open_escalation",
    "progress_of",
    "take_due_timers",
]

_PENDING = TimerStatus.pending.value


def _due(now: datetime) -> Any:
    return (Timer.status == _PENDING, Timer.due_at <= now, ~has_failed(FailureKind.timer, Timer.id))


async def claim_due_timers(session: AsyncSession, *, limit: int, now: datetime) -> list[Timer]:
    """Due timers, locked for us; a timer whose firing failed before is left out (it is
    retried on its own, :func:`claim_timer`)."""
    stmt = select(Timer).where(*_due(now)).order_by(Timer.due_at, Timer.id).limit(limit)
    if is_pg(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


async def due_timer_ids(session: AsyncSession, *, limit: int, now: datetime) -> list[int]:
    """The ids of :func:`claim_due_timers`' timers, unlocked."""
    stmt = select(Timer.id).where(*_due(now)).order_by(Timer.due_at, Timer.id).limit(limit)
    return list((await session.scalars(stmt)).all())


async def claim_timer(session: AsyncSession, *, timer_id: int, now: datetime) -> Timer | None:
    """One due, pending timer, locked for us (None when fired, retired, or held)."""
    stmt = select(Timer).where(Timer.id == timer_id, Timer.status == _PENDING, Timer.due_at <= now)
    if is_pg(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return (await session.scalars(stmt)).one_or_none()


async def next_timer_due(session: AsyncSession) -> datetime | None:
    """When a timer is next due for a first attempt, or a failed one for another.

    The first pending timer in due order (ix_timers_pending_due), not min(due_at): with
    the failures' anti-join PostgreSQL cannot turn min() into one index probe and read
    every pending timer instead — 4.5 ms with a storm's 14,000 pending, 0.1 ms this way
    (EXPLAIN ANALYZE, 2026-12-07) — after every timer pass."""
    first = await session.scalar(
        select(Timer.due_at)
        .where(Timer.status == _PENDING, ~has_failed(FailureKind.timer, Timer.id))
        .order_by(Timer.due_at)
        .limit(1)
    )
    again = await session.scalar(
        select(func.min(IntakeFailure.next_attempt_at)).where(
            IntakeFailure.kind == FailureKind.timer.value,
            IntakeFailure.set_aside_at.is_(None),
            still_to_do(FailureKind.timer),
        )
    )
    due = [d for d in (first, again) if d is not None]
    return min(due) if due else None


def progress_of(call: Call) -> esc.Progress:
    status = CallStatus(call.status)
    return esc.Progress(
        acknowledged=lifecycle.acknowledged(status),
        on_scene=lifecycle.on_scene(status),
        closed=lifecycle.is_closed(status),
        escalation_level=call.escalation_level,
    )


@dataclass
class TakenTimers:
    """A batch of claimed timers after :func:`take_due_timers`: the ids that are ours to
    fire, their calls (locked), and the batch's reads (each call's policy rebuilt once,
    the paging reads of its page_station timers). ``fired`` and ``stale`` collect what
    :func:`fire_timer` did with each, for :func:`finish_taken` to store in one UPDATE
    each."""

    owned: set[int] = field(default_factory=set)
    calls: dict[int, Call] = field(default_factory=dict)
    batch: Batch = field(default_factory=Batch)
    reads: paging.PagingReads = field(default_factory=paging.PagingReads)
    policies: dict[int, esc.Policy] = field(default_factory=dict)
    fired: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)

    def policy_of(self, call: Call) -> esc.Policy:
        """The call's policy snapshot, rebuilt once a batch (it never changes on a call)."""
        if call.id not in self.policies:
            self.policies[call.id] = esc.from_snapshot(call.policy)
        return self.policies[call.id]


async def take_due_timers(
    session: AsyncSession,
    *,
    timers: Sequence[Timer],
    worker: str,
    now: datetime,
    ctx: DispatchContext | None = None,
) -> TakenTimers:
    """For a batch of claimed timers, after the chain lock: mark them ``firing`` with one
    conditional UPDATE (the ids returned are ours: a timer another copy took first is not
    pending any more) and lock their calls with one SELECT. What ``fire_timer`` does per
    timer otherwise, in two statements for the batch. Then what the batch's page_station
    timers page from: their calls' pages and their stations' people, read once for all
    of them (and, when pages are also sent as messages, what the messages say)."""
    if not timers:
        return TakenTimers()
    ids = [t.id for t in timers]
    owned = set(
        (
            await session.scalars(
                update(Timer)
                .where(one_of(Timer.id, ids), Timer.status == _PENDING)
                .values(status=TimerStatus.firing.value, fired_at=now, fired_by=worker)
                .returning(Timer.id)
                .execution_options(synchronize_session=False)
            )
        ).all()
    )
    stmt = select(Call).where(one_of(Call.id, sorted({t.call_id for t in timers}))).order_by(Call.id)
    if is_pg(session):
        stmt = stmt.with_for_update()
    by_id = {c.id: c for c in (await session.scalars(stmt)).all()}
    taken = TakenTimers(owned=owned, calls=by_id)
    paged = [
        by_id[t.call_id]
        for t in timers
        if t.id in owned and t.action == esc.TimerAction.page_station and t.call_id in by_id
    ]
    if paged:  # the calls are locked: their pages are answered under that lock only
        await taken.reads.load(
            session,
            call_ids=[c.id for c in paged],
            station_ids=[c.station_id for c in paged if c.station_id is not None],
            messages=ctx is not None and ctx.page_notifications,
        )
    return taken


async def finish_taken(session: AsyncSession, taken: TakenTimers) -> None:
    """Store what the batch did with its timers: fired, or retired as stale (one UPDATE
    each, instead of one per timer). Until then they stay ``firing``, which no other copy
    claims; the same transaction commits both."""
    for status, ids in ((TimerStatus.fired, taken.fired), (TimerStatus.stale, taken.stale)):
        if ids:
            await session.execute(
                update(Timer)
                .where(one_of(Timer.id, sorted(ids)), Timer.status == TimerStatus.firing.value)
                .values(status=status.value)
                .execution_options(synchronize_session=False)
            )
    taken.fired.clear()
    taken.stale.clear()


async def _take_one(session: AsyncSession, timer: Timer, worker: str, now: datetime) -> Call | None:
    call = await lock_call(session, call_id=timer.call_id)
    res = await session.execute(
        update(Timer)
        .where(Timer.id == timer.id, Timer.status == _PENDING)
        .values(status=TimerStatus.firing.value, fired_at=now, fired_by=worker)
    )
    return call if res.rowcount == 1 else None  # type: ignore[attr-defined]


async def fire_timer(
    session: AsyncSession,
    *,
    timer: Timer,
    worker: str,
    ctx: DispatchContext,
    taken: TakenTimers | None = None,
    now: datetime,
) -> Outcome:
    """Fire one claimed timer exactly once, or retire it as stale. ``taken`` is what
    take_due_timers returned for the batch (the timer's new status is then stored by
    :func:`finish_taken`, for the whole batch at once); without it the timer is taken,
    and its status stored, here."""
    out = Outcome()
    if taken is None:
        call = await _take_one(session, timer, worker, now)
        batch, reads = Batch(), paging.PagingReads()
    else:
        call = taken.calls.get(timer.call_id) if timer.id in taken.owned else None
        batch, reads = taken.batch, taken.reads
    if call is None:
        return out  # another copy had it
    snap = esc.from_snapshot(call.policy) if taken is None else taken.policy_of(call)
    if timer.generation != call.generation:
        decision = esc.TimerDecision(fire=False, stale_reason="superseded escalation chain", next=None)
    else:
        decision = esc.on_timer_due(snap, timer.step, timer.repeat, timer.due_at, progress_of(call))
    if not decision.fire:
        await _set_status(session, timer, TimerStatus.stale, taken)
        detail = {
            "step": timer.step,
            "action": timer.action,
            "repeat": timer.repeat,
            "reason": decision.stale_reason,
            "due_at": timer.due_at.isoformat(),
        }
        await record(session, call, AuditKind.timer_stale, at=now, actor=worker, detail=detail)
        return out
    await _set_status(session, timer, TimerStatus.fired, taken)
    planned = esc.PlannedTimer(timer.step, timer.action, timer.due_at, timer.repeat)
    fire = _Firing(
        call=call,
        policy=snap,
        timer=planned,
        worker=worker,
        ctx=ctx,
        batch=batch,
        out=out,
        now=now,
        reads=reads,
    )
    await _run_step(session, fire, decision)
    return out


async def _set_status(
    session: AsyncSession, timer: Timer, status: TimerStatus, taken: TakenTimers | None
) -> None:
    if taken is not None:  # stored with the batch's others (finish_taken)
        (taken.fired if status is TimerStatus.fired else taken.stale).append(timer.id)
        return
    await session.execute(update(Timer).where(Timer.id == timer.id).values(status=status.value))


async def open_escalation(
    session: AsyncSession,
    call: Call,
    *,
    worker: str,
    ctx: DispatchContext,
    batch: Batch,
    out: Outcome,
    now: datetime,
) -> None:
    """Start a new call's escalation in the transaction that opens it: the steps due the
    instant it opens (alert the station, page its people …) run here, recorded as fired
    timers, and every other step's timer is stored. No timer pass is needed for the
    opening steps, and nothing can fire them twice: the call and its first steps commit
    together or not at all, and no other copy sees the call before that."""
    policy = esc.from_snapshot(call.policy)
    plan = esc.opening(policy, now, progress_of(call))
    for planned in plan.timers:
        schedule_timer(session, call, planned)
        out.timer_at(planned.due_at)
    for planned, decision in plan.fire:
        schedule_timer(session, call, planned, fired_by=worker, fired_at=now)
        fire = _Firing(
            call=call,
            policy=policy,
            timer=planned,
            worker=worker,
            ctx=ctx,
            batch=batch,
            out=out,
            now=now,
            reads=paging.PagingReads(),
        )
        await _run_step(session, fire, decision)


async def _run_step(session: AsyncSession, f: _Firing, decision: esc.TimerDecision) -> None:
    """Do a step that fires, and store its next repetition unless the step says it is done."""
    handler = _ACTIONS.get(f.timer.action)
    again = await handler(session, f) if handler is not None else None
    if decision.next is not None and again is not False:
        nxt = decision.next
        if isinstance(again, datetime) and again > nxt.due_at:
            nxt = replace(nxt, due_at=again)
        schedule_timer(session, f.call, nxt)
        f.out.timer_at(nxt.due_at)
    f.out.calls.add(f.call.id)


# --------------------------------------------------------------------------- what a timer does


@dataclass(frozen=True)
class _Firing:
    call: Call
    policy: esc.Policy  # the call's snapshot
    timer: esc.PlannedTimer  # the step and repetition firing (from its timer row, or opening)
    worker: str
    ctx: DispatchContext
    batch: Batch
    out: Outcome
    now: datetime
    reads: paging.PagingReads  # the transaction's paging reads (a timer batch's: for all its calls)

    @property
    def base(self) -> dict[str, Any]:
        t = self.timer
        late_ms = round((self.now - t.due_at).total_seconds() * 1000)
        return {"step": t.step, "repeat": t.repeat, "due_at": t.due_at.isoformat(), "late_ms": late_ms}

    async def notify(self, session: AsyncSession, *, purpose: str, target: str, body: dict[str, Any]) -> None:
        await queue_notification(
            session,
            self.call,
            purpose=purpose,
            target=target,
            ctx=self.ctx,
            body=body,
            out=self.out,
            now=self.now,
        )


async def _alert_station(session: AsyncSession, f: _Firing) -> None:
    action = esc.TimerAction(f.timer.action)
    kind = AuditKind.alerted if action is esc.TimerAction.alert_station else AuditKind.reminder
    base = f.base
    await record(session, f.call, kind, at=f.now, actor=f.worker, detail=base)
    await f.notify(session, purpose=action.value, target=f"station:{f.call.station_id}", body=base)


async def _escalate(session: AsyncSession, f: _Firing) -> None:
    await escalate(
        session,
        f.call,
        level=f.timer.action.removeprefix("escalate_"),
        actor=f.worker,
        reason=f"not acknowledged (step {f.timer.step})",
        ctx=f.ctx,
        batch=f.batch,
        out=f.out,
        now=f.now,
    )


async def _notify_contacts(session: AsyncSession, f: _Firing) -> datetime | bool:
    """The contact ladder (dispatcher/calls/ladder.py): tell the next contact when the
    last one told has not answered "I'm going" in time; no more repeats once someone is
    going or everyone has been told. The next repetition comes no earlier than the end of
    the current contact's timeout (so a late firing does not cost a whole extra timeout)."""
    timeout = contacts.ladder_timeout(f.call.policy)
    decision = await contacts.tell_next_contact(
        session,
        f.call,
        ctx=f.ctx,
        out=f.out,
        actor=f.worker,
        now=f.now,
        contact_timeout=timeout,
        base=f.base,
    )
    if decision.state is ladder.LadderState.tell:
        return f.now + timeout
    if decision.state is ladder.LadderState.wait and decision.wait_until is not None:
        return decision.wait_until
    return False


async def _page_station(session: AsyncSession, f: _Firing) -> None:
    """Page the on-duty people of the call's station (one more, or all, per the policy);
    the phone's stream hears of it through the call's change announcement."""
    policy = f.policy.steps[f.timer.step].paging
    if policy is None or f.call.station_id is None:
        return
    await paging.step(
        session,
        call_id=f.call.id,
        station_id=f.call.station_id,
        policy=policy,
        now=f.now,
        actor=f.worker,
        ctx=f.ctx,
        reads=f.reads,
    )


async def _alert_supervisor(session: AsyncSession, f: _Firing) -> None:
    call, base = f.call, f.base
    area = await area_of(session, call.id)  # the home's station, wherever the call escalated
    plan = await area_supervisors(session, station_id=area)
    purpose = esc.TimerAction.alert_supervisor.value
    detail = {
        **base,
        "purpose": purpose,
        "supervisors": list(plan.usernames),
        "layers": [layer.value for layer in plan.layers],
    }
    await record(session, call, AuditKind.alerted, at=f.now, actor=f.worker, detail=detail)
    await record_unassigned(
        session, plan, call_id=call.id, station_id=area, purpose=purpose, now=f.now, actor=f.worker
    )
    for target in plan.targets:
        await f.notify(session, purpose=purpose, target=target, body=base)


# A handler returning False says its step is done: no further repetitions are scheduled;
# a time, that the next repetition is due no earlier than that.
_ACTIONS: dict[str, Callable[[AsyncSession, _Firing], Awaitable[datetime | bool | None]]] = {
    esc.TimerAction.alert_station: _alert_station,
    esc.TimerAction.page_station: _page_station,
    esc.TimerAction.remind: _alert_station,
    esc.TimerAction.escalate_street: _escalate,
    esc.TimerAction.escalate_county: _escalate,
    esc.TimerAction.notify_contacts: _notify_contacts,
    esc.TimerAction.alert_supervisor: _alert_supervisor,
}

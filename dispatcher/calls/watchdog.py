"""The watchdog: an open call whose escalation lost its timers (a crash between two
writes, a timer cancelled by mistake) gets the missing steps planned again, and the
repair is recorded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.audit.chain import AuditKind
from dispatcher.audit.models import AuditRow
from dispatcher.calls import escalation as esc
from dispatcher.calls.actions import schedule_timer
from dispatcher.calls.context import record
from dispatcher.calls.lifecycle import OPEN_STATUSES
from dispatcher.calls.models import Call, Timer, TimerStatus
from dispatcher.calls.timers import progress_of

__all__ = ["watchdog"]

_LIVE = (TimerStatus.pending.value, TimerStatus.firing.value)
# a timer set aside after failing counts as run: the step is not re-planned behind
# operators' backs (an admin can retry it)
_RAN = (TimerStatus.fired.value, TimerStatus.stale.value, TimerStatus.failed.value)


async def _steps_run(session: AsyncSession, call: Call) -> dict[int, int]:
    """Step -> the highest repetition that ran. Cancelled timers are not "done": a step
    cancelled by mistake must come back, and on_timer_due drops the ones whose condition
    really holds."""
    done: dict[int, int] = {}
    for step, repeat in (
        await session.execute(
            select(Timer.step, Timer.repeat).where(Timer.call_id == call.id, Timer.status.in_(_RAN))
        )
    ).all():
        done[step] = max(done.get(step, -1), repeat)
    return done


def _missing(
    call: Call, snap: esc.Policy, done: dict[int, int], opened: datetime, now: datetime
) -> list[esc.PlannedTimer]:
    missing: list[esc.PlannedTimer] = []
    for planned in esc.initial_timers(snap, opened):
        if planned.step in done:
            if snap.steps[planned.step].repeat_every_s is None:
                continue  # a one-off step that already ran
            again = esc.PlannedTimer(
                step=planned.step, action=planned.action, due_at=now, repeat=done[planned.step] + 1
            )
        else:
            again = esc.PlannedTimer(
                step=planned.step,
                action=planned.action,
                due_at=max(planned.due_at, now),
                repeat=planned.repeat,
            )
        if esc.on_timer_due(snap, again.step, again.repeat, again.due_at, progress_of(call)).fire:
            missing.append(again)
    return missing


async def watchdog(session: AsyncSession, *, actor: str, now: datetime) -> list[int]:
    """Open calls whose escalation has no live timer although a step is still due:
    re-plan the missing steps and record the repair. Returns the repaired call ids."""
    pending = select(Timer.call_id).where(Timer.status.in_(_LIVE))
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
        done = await _steps_run(session, call)
        opened = (
            await session.scalar(
                select(func.min(AuditRow.at)).where(
                    AuditRow.call_id == call.id, AuditRow.kind == AuditKind.call_opened.value
                )
            )
            or now
        )
        missing = _missing(call, snap, done, opened, now)
        if not missing:
            continue
        for planned in missing:
            schedule_timer(session, call, planned)
        detail = {"replanned_steps": [p.step for p in missing]}
        await record(session, call, AuditKind.watchdog_repair, at=now, actor=actor, detail=detail)
        repaired.append(call.id)
    return repaired

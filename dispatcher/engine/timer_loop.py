"""The timer loop: due escalation timers → the next step of each call's escalation.

Timers are claimed with SKIP LOCKED on PostgreSQL and fired exactly once; between rounds
the loop sleeps until the next one is due on the platform's clock. A batch that fails for
anything but an unavailable database is redone one timer at a time, and a timer that keeps
failing is set aside (dispatcher.engine.handling), so one bad timer cannot stop escalation.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.calls import bulk, failures, outbox, timers
from dispatcher.calls.context import Outcome, is_pg
from dispatcher.calls.models import Call, FailureKind, Timer
from dispatcher.engine import handling
from dispatcher.engine.base import DispatcherState
from dispatcher.engine.metrics import TIMER_LATE, TIMERS_FIRED

log = structlog.get_logger("carecall.dispatcher")


# Timers a pass takes: TIMER_BATCH while the loop keeps up; while passes come back full
# (a storm's reminders and page rounds, due by the thousand within seconds) the next
# takes twice as many, up to TIMER_BATCH_MAX on PostgreSQL: a pass's statements do not
# grow with its timers, so a bigger pass is what lets the loop catch up. SQLite keeps
# TIMER_BATCH (its one writer).
TIMER_BATCH = 50
TIMER_BATCH_MAX = 400


class TimerLoop(DispatcherState):
    _timer_batch: int = TIMER_BATCH  # the next pass's size (grows while passes are full)
    _timer_pass_full: bool = False  # the last pass took as many timers as it could

    async def _timer_loop(self) -> None:
        """Fire due timers; between rounds sleep until the next one is due (at most
        ``timer_poll_s``, which also covers timers other copies scheduled), or until this
        copy's intake opened calls (their opening step fired with them; a later step may
        be due at once too)."""
        backoff = handling.Backoff()
        poll = self.settings.timer_poll_s
        while True:
            self._timers_sleep_until = None  # a pass: a timer stored meanwhile wakes us again
            try:
                busy = await self.timers_once()
                self.heartbeats["timers"] = time.monotonic()
                if busy and self._timer_pass_full:
                    backoff.reset()
                    continue  # more may be due
                # a pass that took fewer than it could left nothing due at its start: the
                # next due time says whether one fell due meanwhile (then no sleep), where
                # another pass would have been a transaction that claims nothing
                # (BEGIN, the claim, COMMIT) after every pass of a steady stream
                due_in = await self._next_timer_in()
                backoff.reset()
            except Exception as exc:
                await backoff.failed("timers_once", exc)
                continue
            await self._sleep_until_due(due_in, poll)
            self._wake_timers.clear()

    async def _next_timer_in(self) -> float | None:
        """Simulated seconds until the earliest pending timer (or a failed one's retry) is
        due, on this platform's clock; None when there is none."""
        async with self.maker() as session:
            due = await timers.next_timer_due(session)
        if due is None:
            return None
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        return (due - self.clock.now()).total_seconds()

    async def _until_next_timer(self, cap_s: float) -> float:
        """Real seconds until the earliest pending timer is due at the clock's current
        rate, capped; 0 when one is due."""
        due_in = await self._next_timer_in()
        if due_in is None:
            return cap_s
        return max(0.0, min(cap_s, self.clock.real_seconds(due_in)))

    async def _sleep_until_due(self, due_in: float | None, cap_s: float) -> None:
        """Until the next timer is due, this copy's intake opens a call (a step of it may
        be due at once), or ``cap_s`` real seconds pass (timers other copies schedule).

        The due moment is waited for on the clock itself, not as real seconds computed
        once: the demo's catch-up clock changes its rate (x100 around alarms, x10,000
        between them), and a wait computed at one rate and slept at the other fired
        escalation timers up to 40 simulated minutes late."""
        if due_in is not None and due_in <= 0:
            return
        if due_in is not None:
            self._timers_sleep_until = self.clock.now() + timedelta(seconds=due_in)
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake_timers.wait())]
        if due_in is not None:
            waits.append(asyncio.ensure_future(self.clock.sleep(due_in)))
        try:
            await asyncio.wait(waits, timeout=cap_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def timers_once(self, limit: int | None = None) -> int:
        """Fire due timers: first those whose firing failed before and are due for another
        attempt, one at a time; then a batch (``limit``, else the pass size TIMER_BATCH
        grows to while passes are full). A batch that fails (not for an unavailable
        database) is redone one timer at a time, so one bad timer cannot stop escalation."""
        adaptive = limit is None
        limit = self._timer_batch if limit is None else limit
        self._timer_pass_full = False
        pg = False
        retried = await self._retry_failed_timers(limit)
        now = self.clock.now()
        out = Outcome()
        fired = 0
        late_s: list[float] = []
        try:
            async with self.maker() as session, session.begin():
                pg = is_pg(session)
                bulk.defer(session)  # next timers and outbox rows: one INSERT per table, first
                audit.defer(session)  # timer rows and calls locked first, the chain at commit
                due = await timers.claim_due_timers(session, limit=limit, now=now)
                taken = await timers.take_due_timers(
                    session, timers=due, worker=self.name, now=now, ctx=self.ctx
                )
                for timer in due:
                    o = await timers.fire_timer(
                        session, timer=timer, worker=self.name, ctx=self.ctx, taken=taken, now=now
                    )
                    await outbox.queue_device_notices(session, notices=o.device_notices, now=now)
                    out.merge(o)
                    late_s.append((now - timer.due_at).total_seconds())
                    fired += 1
                    # a turn for the intake between timers: a batch's steps are Python
                    # with their reads made, and a new call's commit must not wait for them
                    await asyncio.sleep(0)
                await timers.finish_taken(session, taken)  # fired / stale: one UPDATE each
                await session.flush()  # before the commit takes the chain lock
        except Exception as exc:
            if failures.classify(exc) is failures.Failure.transient:
                raise
            log.warning("dispatcher.timers_batch_failed", error=failures.describe(exc))
            self._timer_pass_full = True  # one by one, perhaps not all: look again at once
            return retried + await self._timers_one_by_one(limit)
        self._timer_pass_full = len(due) >= limit
        if fired:
            await self._announce(out)  # the consoles first, right after the commit
            TIMERS_FIRED.labels("handled").inc(fired)
        if adaptive:
            self._timer_batch = handling.next_round_size(
                limit, len(due), base=TIMER_BATCH, cap=TIMER_BATCH_MAX, may_grow=pg
            )
        for late in late_s:
            self._timer_fired(late)
        return retried + fired

    def _timer_fired(self, late_s: float) -> None:
        self.stats.timers_fired += 1
        TIMER_LATE.observe(max(late_s, 0.0))
        if len(self.stats.timer_late_ms) < 100_000:
            self.stats.timer_late_ms.append(late_s * 1000)

    async def _timers_one_by_one(self, limit: int) -> int:
        return await handling.one_at_a_time(
            self.maker,
            lambda s: timers.due_timer_ids(s, limit=limit, now=self.clock.now()),
            self._fire_one_timer,
        )

    async def _retry_failed_timers(self, limit: int) -> int:
        if not self._retry_look_due("timer"):
            return 0
        return await handling.retry_failed(
            self.maker, handling.TIMERS, now=self.clock.now, limit=limit, one=self._fire_one_timer
        )

    async def _fire_one_timer(self, timer_id: int) -> bool | None:
        """Fire one due timer: True when fired (or retired as stale), False when firing
        failed (recorded), None when it was not ours to fire."""
        now = self.clock.now()
        try:
            async with self.maker() as session, session.begin():
                bulk.defer(session)  # first: its rows go in before the chain lock is taken
                audit.defer(session)
                timer = await timers.claim_timer(session, timer_id=timer_id, now=now)
                if timer is None:
                    return None  # fired, retired or held by another copy
                late = (now - timer.due_at).total_seconds()
                out = await timers.fire_timer(session, timer=timer, worker=self.name, ctx=self.ctx, now=now)
                await outbox.queue_device_notices(session, notices=out.device_notices, now=now)
                await failures.clear_failure(session, kind=FailureKind.timer, ref=timer_id)
                await session.flush()
        except Exception as exc:
            if failures.classify(exc) is failures.Failure.transient:
                raise
            await self._timer_failed(timer_id, exc, now)
            return False
        self._timer_fired(late)
        TIMERS_FIRED.labels("handled").inc()
        await self._announce(out)
        return True

    async def _timer_failed(self, timer_id: int, exc: Exception, now: datetime) -> None:
        """Count a failed firing of one timer; at the limit set it aside (status
        ``failed``, noted in the call's audit log with the error, counted, listed)."""

        async def set_aside(session: AsyncSession, rec: failures.Recorded, error: str) -> int | None:
            """Mark it failed and note it in its call's log; the call's id (to announce)."""
            row = (
                await session.execute(
                    select(Timer.call_id, Timer.step, Timer.action, Call.station_id)
                    .join(Call, Call.id == Timer.call_id)
                    .where(Timer.id == timer_id)
                )
            ).one_or_none()
            await session.execute(
                update(Timer).where(Timer.id == timer_id, Timer.status == "pending").values(status="failed")
            )
            if row is None:
                return None
            await audit.append(
                session,
                kind=AuditKind.note.value,
                at=now,
                actor=self.name,
                call_id=row[0],
                station_id=row[3],
                detail={
                    "could_not_be_processed": "timer",
                    "timer_id": timer_id,
                    "step": row[1],
                    "action": row[2],
                    "attempts": rec.attempts,
                    "error": error,
                },
            )
            return int(row[0])

        counted = await handling.count_failure(
            self.maker,
            work=handling.TIMERS,
            ref=timer_id,
            exc=exc,
            now=now,
            worker=self.name,
            max_attempts=self.max_handling_attempts,
            retry_base_s=self.handling_retry_s,
            ids={"timer_id": timer_id},
            set_aside=set_aside,
        )
        if counted is not None and counted[1] is not None:
            await self._announce(Outcome(calls={counted[1]}))

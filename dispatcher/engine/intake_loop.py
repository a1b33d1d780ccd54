"""The intake loop: stored device events → calls.

Events are claimed once (event_intake's key), so copies may run side by side. A batch that
fails for anything but an unavailable database is redone one event at a time, and an event
that keeps failing is set aside (dispatcher.engine.handling).
"""

from __future__ import annotations

import time
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import DeviceEvent
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.calls import bulk, claims, failures, intake, outbox
from dispatcher.calls.context import Outcome, is_pg
from dispatcher.calls.models import EventIntake, FailureKind
from dispatcher.engine import handling
from dispatcher.engine.base import DispatcherState
from dispatcher.engine.metrics import CALLS_OPENED
from dispatcher.registry.models import Home

log = structlog.get_logger("carecall.dispatcher")


# How often the intake looks for waiting events from the very first one, not from its
# floor (dispatcher/calls/claims.py, EVENT_FLOOR_MARGIN): an event put back by an admin
# waits at most this long.
INTAKE_SWEEP_S = 30.0

# Events a round takes: INTAKE_BATCH while the intake keeps up; while it finds full
# batches (a storm, or a core it shares) the next round takes twice as many, up to
# INTAKE_BATCH_MAX on PostgreSQL. A round's statements do not grow with its events (the
# reads are set-based, the new calls one INSERT), so a bigger round is what lets the
# intake catch up: at 25 a round, 100 alarms a second with one core busy fell 10 s behind.
# SQLite keeps INTAKE_BATCH: its one writer (the gateway's event commits too) would wait
# for a longer transaction.
INTAKE_BATCH = 25
INTAKE_BATCH_MAX = 200


class IntakeLoop(DispatcherState):
    _intake_floor: int = 0  # where this copy's look for waiting events starts
    _intake_swept: float = float("-inf")  # time.monotonic() of the last look from the start
    _sweep_again: bool = False  # the last look from the start found a full batch below the floor
    _intake_batch: int = INTAKE_BATCH  # the next round's size (grows while rounds are full)

    def _claim_floor(self) -> int:
        """0 (a look from the very start) at start-up, every INTAKE_SWEEP_S and while such
        a look keeps finding old events; the floor otherwise."""
        now = time.monotonic()
        if self._sweep_again or now - self._intake_swept >= INTAKE_SWEEP_S:
            self._intake_swept = now
            return 0
        return self._intake_floor

    def _claimed(self, floor: int, ids: list[int], limit: int) -> None:
        """Move the floor after a committed claim: up only, by the events at or above it
        (old events a look from the start took are handled now, and say nothing of where
        the waiting ones begin)."""
        current = self._intake_floor
        self._sweep_again = floor == 0 and len(ids) >= limit and any(i < current for i in ids)
        self._intake_floor = claims.next_floor(current, [i for i in ids if i >= current])

    async def intake_once(self, limit: int | None = None) -> int:
        """Take stored events into calls: first those whose handling failed before and
        are due for another attempt, one at a time; then a batch of new ones (``limit``,
        else the round size INTAKE_BATCH grows to while rounds are full). A batch that
        fails (not for an unavailable database) is redone one event at a time, so a
        poison event costs the others one retry round, once."""
        adaptive = limit is None
        limit = self._intake_batch if limit is None else limit
        retried = await self._retry_failed_events(limit)
        now = self.clock.now()
        out = Outcome()
        floor = self._claim_floor()
        try:
            async with self.maker() as session, session.begin():
                # audit rows are chained at commit: the chain lock is held for the commit
                # only, not while the batch is routed (see audit.defer); timers and
                # outbox rows go in as one INSERT per table (see bulk.defer)
                pg = is_pg(session)
                bulk.defer(session)  # first: its rows go in before the chain lock is taken
                audit.defer(session)
                events = await claims.claim_events(session, limit=limit, floor=floor)
                # set-based reads: registry rows, then the homes' open calls (locked)
                batch = await intake.open_batch(session, events=events, ctx=self.ctx, now=now)
                # One flush per batch, not one per query: the rows of a batch (calls'
                # timers, audit rows, intake marks) go to the database together. A call
                # itself is flushed when opened (open_call needs its id), so a later event
                # of the same home in the batch still finds it and joins it.
                with session.no_autoflush:
                    for ev in events:
                        o = await intake.handle_event(
                            session, ev=ev, ctx=self.ctx, batch=batch, actor=self.name, now=now
                        )
                        await outbox.queue_device_notices(session, notices=o.device_notices, now=now)
                        out.merge(o)
                # the batch's rows now, before the commit takes the chain lock
                await session.flush()
        except Exception as exc:
            if failures.classify(exc) is failures.Failure.transient:
                raise
            # a bug, bad data, or (SQLite, no SKIP LOCKED) another copy handling one of
            # these first: one at a time, each event's failure its own
            log.warning("dispatcher.intake_batch_failed", error=failures.describe(exc))
            return retried + await self._intake_one_by_one(limit)
        # the consoles first: the calls are committed, nothing else should come before
        await self._announce(out, opened=bool(events))
        self._claimed(floor, [ev.id for ev in events], limit)
        if adaptive:
            self._intake_batch = handling.next_round_size(
                limit, len(events), base=INTAKE_BATCH, cap=INTAKE_BATCH_MAX, may_grow=pg
            )
        self.stats.events += len(events)
        CALLS_OPENED.labels("handled").inc(len(events))
        return retried + len(events)

    async def _intake_one_by_one(self, limit: int) -> int:
        """A poison event must not block the queue: each event in its own transaction;
        one that fails is counted (and, at the limit, set aside) on its own."""
        return await handling.one_at_a_time(
            self.maker,
            lambda s: claims.event_ids_to_handle(s, limit=limit, floor=self._intake_floor),
            self._handle_one_event,
        )

    async def _retry_failed_events(self, limit: int) -> int:
        if not self._retry_look_due("event"):
            return 0
        return await handling.retry_failed(
            self.maker, handling.EVENTS, now=self.clock.now, limit=limit, one=self._handle_one_event
        )

    async def _handle_one_event(self, event_pk: int) -> bool | None:
        """Handle one stored event: True when handled, False when it failed (the failure
        is recorded), None when another copy had it. A transient failure is raised: the
        loop backs off."""
        now = self.clock.now()
        try:
            async with self.maker() as session, session.begin():
                bulk.defer(session)  # first: its rows go in before the chain lock is taken
                audit.defer(session)
                ev = await claims.claim_event(session, event_pk=event_pk)
                if ev is None:
                    return None  # handled (or being handled) by another copy
                # the batch's reads and locks (the home's row, its open calls), for one
                batch = await intake.open_batch(session, events=[ev], ctx=self.ctx, now=now)
                out = await intake.handle_event(
                    session, ev=ev, ctx=self.ctx, batch=batch, actor=self.name, now=now
                )
                await outbox.queue_device_notices(session, notices=out.device_notices, now=now)
                await failures.clear_failure(session, kind=FailureKind.event, ref=event_pk)
                await session.flush()
        except Exception as exc:
            if failures.classify(exc) is failures.Failure.transient:
                raise
            if isinstance(exc, IntegrityError) and await self._event_handled(event_pk):
                return None  # another copy handled it first
            await self._event_failed(event_pk, exc, now)
            return False
        await self._announce(out, opened=True)
        self.stats.events += 1
        CALLS_OPENED.labels("handled").inc()
        return True

    async def _event_handled(self, event_pk: int) -> bool:
        async with self.maker() as session:
            return await session.get(EventIntake, event_pk) is not None

    async def _event_failed(self, event_pk: int, exc: Exception, now: datetime) -> None:
        """Count a handling failure of one event; at the limit set it aside: marked
        ``failed`` in event_intake (so no copy takes it again), noted in the audit log
        with the error, counted, and listed for operators."""
        where = await self._event_where(event_pk)

        async def set_aside(session: AsyncSession, rec: failures.Recorded, error: str) -> None:
            session.add(
                EventIntake(
                    event_pk=event_pk, decision="failed", call_id=None, handled_at=now, handled_by=self.name
                )
            )
            await audit.append(
                session,
                kind=AuditKind.note.value,
                at=now,
                actor=self.name,
                call_id=None,
                station_id=where.get("station_id"),
                detail={
                    "could_not_be_processed": "event",
                    "event_pk": event_pk,
                    "device_id": where.get("device_id"),
                    "type": where.get("type"),
                    "attempts": rec.attempts,
                    "error": error,
                },
            )

        await handling.count_failure(
            self.maker,
            work=handling.EVENTS,
            ref=event_pk,
            exc=exc,
            now=now,
            worker=self.name,
            max_attempts=self.max_handling_attempts,
            retry_base_s=self.handling_retry_s,
            ids={"event_pk": event_pk, "device_id": where.get("device_id")},
            set_aside=set_aside,
            handled_elsewhere=lambda: self._event_handled(event_pk),
        )

    async def _event_where(self, event_pk: int) -> dict[str, str | None]:
        """Device, type and station of an event, for the record of its failure; the
        columns alone (not the row, which may be what is broken), best effort."""
        try:
            async with self.maker() as session:
                row = (
                    await session.execute(
                        select(DeviceEvent.device_id, DeviceEvent.type, Home.station_id)
                        .outerjoin(Home, Home.id == DeviceEvent.home_id)
                        .where(DeviceEvent.id == event_pk)
                    )
                ).one_or_none()
        except Exception as exc:
            if failures.classify(exc) is failures.Failure.transient:
                raise
            return {}
        if row is None:
            return {}
        return {"device_id": row[0], "type": row[1], "station_id": row[2]}

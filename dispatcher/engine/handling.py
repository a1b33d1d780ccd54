"""What a dispatcher loop does when its work fails: one implementation for every loop.

Two kinds of failure, told apart by ``dispatcher.calls.failures.classify``:

* the database is unavailable (transient): the loop backs off (:class:`Backoff`) and does
  the same work again, for as long as it takes; nothing is counted against the work;
* the work itself fails (a bug, bad data): a stored event or a timer is tried
  ``MAX_HANDLING_ATTEMPTS`` times in all, across copies and restarts, then set aside
  (:func:`count_failure`), so one poison item never stops the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import structlog
from prometheus_client import Counter as PCounter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit import service as audit
from dispatcher.calls import failures
from dispatcher.calls.models import FailureKind
from dispatcher.engine.metrics import CALLS_OPENED, DB_UNAVAILABLE, HANDLING_FAILED, SET_ASIDE, TIMERS_FIRED

log = structlog.get_logger("carecall.dispatcher")

# A notification or device ack is tried this many times in all, then given up.
MAX_ATTEMPTS = 8
# A stored event or a timer whose handling fails is tried this many times in all (across
# copies and restarts), the retries 2 s, 4 s, ... apart, then set aside.
MAX_HANDLING_ATTEMPTS = 3
HANDLING_RETRY_S = 2.0


def next_round_size(used: int, taken: int, *, base: int, cap: int, may_grow: bool) -> int:
    """The next round's size for a loop that takes work in rounds (intake, timers): twice
    this one while it came back full (a backlog), up to ``cap``; ``base`` otherwise. A
    round's statements do not grow with its size, so a bigger round is how a loop that
    fell behind catches up."""
    return min(used * 2, cap) if may_grow and taken >= used else base

R = TypeVar("R")


def log_loop_failure(task: str, exc: Exception, backoff: float) -> None:
    """An unavailable database is a warning with its retry; anything else is a failure of
    the work (a bug, bad data), logged with the exception — never as db_unavailable."""
    if failures.classify(exc) is failures.Failure.transient:
        DB_UNAVAILABLE.labels(task).inc()
        log.warning("dispatcher.db_unavailable", task=task, error=str(exc)[:200], retry_s=backoff)
    else:
        log.error("dispatcher.handling_failed", task=task, retry_s=backoff, exc_info=exc)


class Backoff:
    """The wait between failed rounds of a loop: 0.2 s, doubling up to 5 s, and back to
    0.2 s once a round succeeds."""

    FIRST_S = 0.2
    MOST_S = 5.0

    def __init__(self) -> None:
        self.s = self.FIRST_S

    def reset(self) -> None:
        self.s = self.FIRST_S

    async def wait(self) -> None:
        await asyncio.sleep(self.s)
        self.s = min(self.s * 2, self.MOST_S)

    async def failed(self, task: str, exc: Exception) -> None:
        """A round of ``task`` raised: log it (database unavailable or a failure of the
        work) and wait before the next round."""
        log_loop_failure(task, exc, self.s)
        await self.wait()


@dataclass(frozen=True)
class WorkKind:
    """A kind of work that is set aside after repeated failures."""

    kind: FailureKind  # as counted in intake_failures
    task: str  # the loop, as logs name it
    outcome: PCounter  # the kind's results counter: "failed" once one is set aside
    set_aside_event: str  # the log line when one is set aside


EVENTS = WorkKind(FailureKind.event, "intake", CALLS_OPENED, "dispatcher.event_set_aside")
TIMERS = WorkKind(FailureKind.timer, "timers", TIMERS_FIRED, "dispatcher.timer_set_aside")


async def one_at_a_time(
    maker: async_sessionmaker[AsyncSession],
    refs: Callable[[AsyncSession], Awaitable[list[int]]],
    one: Callable[[int], Awaitable[bool | None]],
) -> int:
    """Each of the items ``refs`` lists in a transaction of its own (``one``: True when
    done, False when it failed and was counted, None when another copy had it), so one
    that fails costs only itself; how many were ours."""
    async with maker() as session:
        ids = await refs(session)
    return sum([await one(ref) is not None for ref in ids])


async def retry_failed(
    maker: async_sessionmaker[AsyncSession],
    work: WorkKind,
    *,
    now: Callable[[], datetime],
    limit: int,
    one: Callable[[int], Awaitable[bool | None]],
) -> int:
    """The items of this kind whose handling failed and whose retry is due (not set
    aside), each in a transaction of its own."""
    return await one_at_a_time(
        maker, lambda s: failures.failed_ids_due(s, kind=work.kind, now=now(), limit=limit), one
    )


async def count_failure(
    maker: async_sessionmaker[AsyncSession],
    *,
    work: WorkKind,
    ref: int,
    exc: Exception,
    now: datetime,
    worker: str,
    max_attempts: int,
    retry_base_s: float,
    ids: Mapping[str, object],
    set_aside: Callable[[AsyncSession, failures.Recorded, str], Awaitable[R]],
    handled_elsewhere: Callable[[], Awaitable[bool]] | None = None,
) -> tuple[failures.Recorded, R | None] | None:
    """Count a failed attempt at one event or timer; at the limit set it aside:
    ``set_aside(session, record, error)`` marks it in the same transaction (so no copy
    takes it again) and notes it in the audit log. Then it is counted and logged (``ids``
    name it in the log lines).

    Returns the record and what ``set_aside`` returned (None when not set aside), or None
    when the failure could not be counted: another copy handled the item after all
    (``handled_elsewhere``), or a second copy's count collided with ours twice."""
    error = failures.describe(exc)
    for _ in range(2):  # a second copy may insert the failure row at the same moment
        try:
            async with maker() as session, session.begin():
                audit.defer(session)
                rec = await failures.record_failure(
                    session,
                    kind=work.kind,
                    ref=ref,
                    error=error,
                    now=now,
                    worker=worker,
                    max_attempts=max_attempts,
                    retry_base_s=retry_base_s,
                )
                marked = await set_aside(session, rec, error) if rec.set_aside else None
        except IntegrityError:
            if handled_elsewhere is not None and await handled_elsewhere():
                return None
            continue
        break
    else:
        return None
    HANDLING_FAILED.labels(work.kind).inc()
    log.error(
        "dispatcher.handling_failed",
        task=work.task,
        **ids,
        attempt=rec.attempts,
        set_aside=rec.set_aside,
        exc_info=exc,
    )
    if rec.set_aside:
        SET_ASIDE.labels(work.kind).inc()
        work.outcome.labels("failed").inc()
        log.error(work.set_aside_event, **ids, error=error)
    return rec, marked

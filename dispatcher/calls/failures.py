"""Why did handling fail, and what to do about an event or a timer that keeps failing.

Two kinds of failure, told apart by :func:`classify` (pure):

- ``transient``: the database (or the network to it) is unavailable for a while — a
  refused, reset or invalidated connection, a timeout, a lock or serialization conflict.
  Nothing is wrong with the work itself: the loop backs off and tries the same work again,
  for as long as it takes.
- ``handling``: everything else — a bug (ProgrammingError, a Python exception) or data the
  code cannot handle (DataError, a broken row). Retrying the same work forever would stop
  every other event behind it, so the item is retried a bounded number of times
  (:func:`record_failure`, counted in ``intake_failures`` so the bound holds across
  dispatcher copies and restarts) and then set aside for operators and admins.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import DeviceEvent
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.calls.context import is_pg
from dispatcher.calls.models import Call, EventIntake, FailureKind, IntakeFailure, Timer, TimerStatus
from dispatcher.registry.models import Home


class Failure(StrEnum):
    transient = "transient"
    handling = "handling"


# SQLSTATE classes and codes that mean "the database is unavailable right now", not "this
# work is bad": connection exceptions (08), insufficient resources (53), operator
# intervention that ends sessions (57P01-57P03: shutdown, crash, starting up), a database
# or login that cannot be reached at connect time (3D000, 28xxx), serialization failures
# and deadlocks (40001, 40P01) and lock timeouts (55P03).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "28")
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "3D000"})
# SQLite reports contention and an unreachable file as OperationalError, like it reports
# "no such table": only these messages are about availability.
_SQLITE_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "database is busy",
    "unable to open database file",
    "disk i/o error",
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the driver error it wraps and their explicit causes (bounded)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 8:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)
        if isinstance(orig, BaseException):
            todo.append(orig)
        if e.__cause__ is not None:
            todo.append(e.__cause__)


def _sqlstate(e: BaseException) -> str | None:
    for attr in ("sqlstate", "pgcode"):
        code = getattr(e, attr, None)
        if isinstance(code, str) and code:
            return code
    return None


def classify(exc: BaseException) -> Failure:
    """``transient`` when the database is unavailable for a while, ``handling`` for a
    failure of the work itself (a bug or bad data). Pure: looks at the exception only."""
    for e in _causes(exc):
        if isinstance(e, OSError | TimeoutError | sa_exc.TimeoutError | sa_exc.DisconnectionError):
            return Failure.transient
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return Failure.transient
        code = _sqlstate(e)
        if code is not None and (code in _TRANSIENT_SQLSTATES or code[:2] in _TRANSIENT_SQLSTATE_CLASSES):
            return Failure.transient
        if isinstance(e, sa_exc.OperationalError):
            message = str(e.orig if e.orig is not None else e).lower()
            if any(m in message for m in _SQLITE_TRANSIENT):
                return Failure.transient
    return Failure.handling


# long digit runs (a phone number in a value the database refused) never reach the record
_LONG_NUMBER = re.compile(r"\d{7,}")


def describe(exc: BaseException) -> str:
    """The error as operators see it: type and message — the first line only (SQL errors
    list their parameters below it), long numbers masked."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = _LONG_NUMBER.sub("#", text)
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


@dataclass(frozen=True)
class Recorded:
    attempts: int
    set_aside: bool


def retry_delay_s(attempts: int, base_s: float) -> float:
    """Seconds before the next attempt after ``attempts`` failures: doubling, capped."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), 300.0))


async def record_failure(
    session: AsyncSession,
    *,
    kind: FailureKind,
    ref: int,
    error: str,
    now: datetime,
    worker: str,
    max_attempts: int,
    retry_base_s: float,
) -> Recorded:
    """Count one handling failure of an event or a timer (in the caller's transaction) and
    decide whether it is now set aside. The row is locked while counted, so two copies
    failing on the same item at once count twice, never once."""
    stmt = select(IntakeFailure).where(IntakeFailure.kind == kind, IntakeFailure.ref == ref)
    if is_pg(session):
        stmt = stmt.with_for_update()
    row = (await session.scalars(stmt)).one_or_none()
    if row is None:
        row = IntakeFailure(
            kind=FailureKind(kind).value,
            ref=ref,
            attempts=0,
            error="",
            first_failed_at=now,
            last_failed_at=now,
            next_attempt_at=now,
            set_aside_at=None,
            failed_by=worker,
        )
        session.add(row)
    row.attempts += 1
    row.error = error[:500]
    row.last_failed_at = now
    row.failed_by = worker
    row.next_attempt_at = now + timedelta(seconds=retry_delay_s(row.attempts, retry_base_s))
    set_aside = row.attempts >= max_attempts
    if set_aside and row.set_aside_at is None:
        row.set_aside_at = now
    await session.flush()
    return Recorded(attempts=row.attempts, set_aside=set_aside)


# --------------------------------------------------------------------------- the queue's view


def has_failed(kind: FailureKind, ref: Any) -> Any:
    """SQL: the event or timer ``ref`` has failed before (it is retried on its own)."""
    return select(IntakeFailure.ref).where(IntakeFailure.kind == kind, IntakeFailure.ref == ref).exists()


def still_to_do(kind: FailureKind) -> Any:
    """SQL: a failure row whose event is still unhandled, or whose timer is still pending."""
    if FailureKind(kind) is FailureKind.event:
        return ~select(EventIntake.event_pk).where(EventIntake.event_pk == IntakeFailure.ref).exists()
    return (
        select(Timer.id)
        .where(Timer.id == IntakeFailure.ref, Timer.status == TimerStatus.pending.value)
        .exists()
    )


async def failed_ids_due(session: AsyncSession, *, kind: FailureKind, now: datetime, limit: int) -> list[int]:
    """Events or timers whose handling failed, not set aside, still to do, and due for
    another attempt."""
    stmt = (
        select(IntakeFailure.ref)
        .where(
            IntakeFailure.kind == kind,
            IntakeFailure.set_aside_at.is_(None),
            IntakeFailure.next_attempt_at <= now,
            still_to_do(kind),
        )
        .order_by(IntakeFailure.next_attempt_at, IntakeFailure.ref)
        .limit(limit)
    )
    return list((await session.scalars(stmt)).all())


async def clear_failure(session: AsyncSession, *, kind: FailureKind, ref: int) -> None:
    """Forget the failures of an event or a timer that has now been handled."""
    await session.execute(delete(IntakeFailure).where(IntakeFailure.kind == kind, IntakeFailure.ref == ref))


# --------------------------------------------------------------------------- putting back


async def _put_back(session: AsyncSession, kind: FailureKind, ref: int) -> tuple[int | None, str | None]:
    """Make the set-aside item due again; (its call, its station) for the record."""
    if FailureKind(kind) is FailureKind.event:
        station = await session.scalar(
            select(Home.station_id)
            .join(DeviceEvent, DeviceEvent.home_id == Home.id)
            .where(DeviceEvent.id == ref)
        )
        await session.execute(
            delete(EventIntake).where(EventIntake.event_pk == ref, EventIntake.decision == "failed")
        )
        return None, station
    row = (
        await session.execute(
            select(Timer.call_id, Call.station_id).join(Call, Call.id == Timer.call_id).where(Timer.id == ref)
        )
    ).one_or_none()
    await session.execute(
        update(Timer)
        .where(Timer.id == ref, Timer.status == TimerStatus.failed.value)
        .values(status=TimerStatus.pending.value)
    )
    return (row[0], row[1]) if row is not None else (None, None)


async def requeue(session: AsyncSession, *, kind: FailureKind, ref: int, actor: str, now: datetime) -> bool:
    """Put a set-aside event or timer back (an admin's action, recorded in the audit log):
    its failure count starts again; an event is taken in again, a timer is due at once (a
    call closed meanwhile retires it as stale). False when no such item is set aside."""
    failure = (
        await session.scalars(
            select(IntakeFailure)
            .where(
                IntakeFailure.kind == kind,
                IntakeFailure.ref == ref,
                IntakeFailure.set_aside_at.is_not(None),
            )
            .with_for_update()
        )
    ).one_or_none()
    if failure is None:
        return False
    call_id, station = await _put_back(session, kind, ref)
    await session.delete(failure)
    ref_key = "event_pk" if kind is FailureKind.event else "timer_id"
    await audit.append(
        session,
        kind=AuditKind.note.value,
        at=now,
        actor=actor,
        call_id=call_id,
        station_id=station,
        detail={"requeued": kind.value, ref_key: ref, "attempts": failure.attempts, "error": failure.error},
    )
    return True

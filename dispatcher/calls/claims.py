"""Which stored device events wait for the intake, and claiming them (the intake's
first statement of each round, dispatcher/engine/intake_loop.py).

An event waits while it has no ``event_intake`` row and its handling has not failed
before (a failed one is retried on its own, dispatcher/engine/handling.py). Claims lock
with SKIP LOCKED on PostgreSQL, so dispatcher copies take different events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.models import DeviceEvent
from dispatcher.calls.context import is_pg, plan_for_parameters
from dispatcher.calls.failures import has_failed
from dispatcher.calls.models import EventIntake, FailureKind

__all__ = ["EVENT_FLOOR_MARGIN", "claim_event", "claim_events", "event_ids_to_handle", "next_floor"]

# The intake looks for waiting events from a floor, not from the first event ever stored:
# with the whole history scanned every round, one claim took 74 ms at 200,000 stored
# events on PostgreSQL (a merge anti-join over both primary keys) and grew with every
# event, a wait added to every SOS. The floor trails the first event this copy claimed by
# this many ids, because an id is drawn before its transaction commits (a gateway commits
# a batch of at most a few hundred) and another copy may hold (SKIP LOCKED) events just
# below ours. A look from the very start (``floor`` 0) now and then catches anything
# older: an event an admin put back (failures.requeue), one a dead copy left.
EVENT_FLOOR_MARGIN = 5_000


def _event_handled(floor: int = 0) -> Any:
    return (
        select(EventIntake.event_pk)
        .where(EventIntake.event_pk == DeviceEvent.id, EventIntake.event_pk >= floor)
        .exists()
    )


def _to_handle(floor: int = 0) -> Any:
    return select(DeviceEvent).where(
        DeviceEvent.id >= floor, ~_event_handled(floor), ~has_failed(FailureKind.event, DeviceEvent.id)
    )


def next_floor(floor: int, claimed: Sequence[int]) -> int:
    """Where the next look for waiting events may start, after a look from ``floor`` that
    claimed the events ``claimed`` (none: the floor stays)."""
    return max(floor, min(claimed) - EVENT_FLOOR_MARGIN) if claimed else floor


async def claim_events(session: AsyncSession, *, limit: int, floor: int = 0) -> list[DeviceEvent]:
    """Stored events no dispatcher has handled yet, from id ``floor`` on, oldest first,
    locked for us. Events whose handling failed before are left out: they are retried
    one at a time (:func:`claim_event`), so a poison event never fails a whole batch twice."""
    stmt = _to_handle(floor).order_by(DeviceEvent.id).limit(limit)
    await plan_for_parameters(session)
    if is_pg(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.scalars(stmt)).all())


async def event_ids_to_handle(session: AsyncSession, *, limit: int, floor: int = 0) -> list[int]:
    """The ids of :func:`claim_events`' events, unlocked: ids load even when a row does not."""
    stmt = (
        select(DeviceEvent.id)
        .where(
            DeviceEvent.id >= floor, ~_event_handled(floor), ~has_failed(FailureKind.event, DeviceEvent.id)
        )
        .order_by(DeviceEvent.id)
        .limit(limit)
    )
    await plan_for_parameters(session)
    return list((await session.scalars(stmt)).all())


async def claim_event(session: AsyncSession, *, event_pk: int) -> DeviceEvent | None:
    """One stored event, if no dispatcher has handled it yet, locked for us (None when
    handled, or on PostgreSQL while another copy holds it)."""
    stmt = select(DeviceEvent).where(DeviceEvent.id == event_pk, ~_event_handled())
    if is_pg(session):
        stmt = stmt.with_for_update(skip_locked=True)
    return (await session.scalars(stmt)).one_or_none()

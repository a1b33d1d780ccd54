"""What the dispatcher could not process: stored events and escalation timers whose handling
kept failing and were set aside (see dispatcher/calls/failures.py), for operators to handle by
hand and for admins to put back once the cause is fixed.

Operators and supervisors see the items of their station subtree (an event by its home's
station, a timer by its call's station); admins and county users see all. Putting an item
back is an admin action and is recorded in the audit log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus, RedisBus
from carecall.core.clock import Clock, SystemClock
from dispatcher.audit import service as audit
from dispatcher.auth.models import Role
from dispatcher.auth.principals import Principal, current_principal, require_role
from dispatcher.auth.tokens import TokenSigner
from dispatcher.calls.failures import requeue
from dispatcher.calls.models import FailureKind
from dispatcher.calls.queries import IntakeFailuresOut, set_aside

# an event's or a timer's id: a number the database can hold, or a 422 (never a 500)
RefPath = Annotated[int, Path(ge=1, le=2**63 - 1)]


class RetryOut(BaseModel):
    kind: str
    ref: int
    requeued: bool


def intake_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    bus: MemoryBus | RedisBus | None = None,
    clock: Clock | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/intake", tags=["intake"])
    who_dep = Depends(current_principal(maker, signer))
    admin = [Depends(current_principal(maker, signer)), Depends(require_role(Role.admin))]
    the_clock = clock or SystemClock()

    @router.get("/failures", response_model=IntakeFailuresOut)
    async def list_failures(who: Principal = who_dep) -> IntakeFailuresOut:
        """Events and timers set aside as "could not be processed", newest first, with
        the error, within the caller's scope."""
        async with maker() as s:
            return await set_aside(s, scope=who.scope)

    async def retry(kind: FailureKind, ref: int, who: Principal) -> RetryOut:
        now = the_clock.now()
        async with maker() as s, s.begin():
            audit.defer(s)
            found = await requeue(s, kind=kind, ref=ref, actor=f"user:{who.username}", now=now)
        if not found:
            raise HTTPException(404, f"no such {kind.value} set aside")
        if kind is FailureKind.event and bus is not None:
            await bus.publish("events", {"requeued": 1})
        # a timer needs no wake-up: the timer loop polls every timer_poll_s
        return RetryOut(kind=kind.value, ref=ref, requeued=True)

    @router.post("/failures/{event_pk}/retry", response_model=RetryOut, dependencies=admin)
    async def retry_event(event_pk: RefPath, who: Principal = who_dep) -> RetryOut:
        """Put a set-aside event back in the queue: its failure count starts again."""
        return await retry(FailureKind.event, event_pk, who)

    @router.post("/failures/timers/{timer_id}/retry", response_model=RetryOut, dependencies=admin)
    async def retry_timer(timer_id: RefPath, who: Principal = who_dep) -> RetryOut:
        """Put a set-aside timer back: it is due at once (a call closed meanwhile retires
        it as stale)."""
        return await retry(FailureKind.timer, timer_id, who)

    return router

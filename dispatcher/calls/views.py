"""Calls over HTTP: the queue, one call with its timeline, and operator actions.

Scope is enforced on every read and write: a call outside the caller's subtree is a 404,
never a 403, so nobody learns it exists. Times are derived from the audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from dispatcher.auth.principals import Principal, current_principal
from dispatcher.auth.privacy import log_reads, mask_name, redact_event_data, sees_health_data
from dispatcher.auth.tokens import TokenSigner
from dispatcher.calls import paging, queries
from dispatcher.calls.actions import act
from dispatcher.calls.context import Actor, CallError, DispatchContext, Outcome
from dispatcher.calls.lifecycle import CallAction
from dispatcher.calls.outbox import queue_device_notices
from dispatcher.calls.queries import CallDetail, CallOut
from dispatcher.calls.visibility import call_visible

MAX_STAFF_IDS = 50


class ActionBody(BaseModel):
    """Action inputs; each action reads the fields it needs."""

    # a call needs a handful of responders; 50 is far beyond any real dispatch
    staff_ids: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=MAX_STAFF_IDS
    )
    outcome: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=4000)
    text: str | None = Field(default=None, max_length=4000)
    to: str | None = Field(default=None, max_length=64)
    false_alarm: bool | None = None
    expected_version: int | None = Field(default=None, ge=0, le=2**31 - 1)


def redact_call(call: CallOut, who: Principal) -> CallOut:
    """A call as ``who`` may see it: supervisors get the resident's name masked and no
    vital signs in the events (dispatcher.auth.privacy)."""
    if sees_health_data(who):
        return call
    events = [e.model_copy(update={"data": redact_event_data(e.data)}) for e in call.events]
    return call.model_copy(update={"resident_name": mask_name(call.resident_name), "events": events})


class _Calls:
    """What the endpoints share: the database, the clock, the dispatch context, and what
    to do once an action committed."""

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        *,
        ctx_factory: Callable[[], DispatchContext],
        clock: Clock,
        after_commit: Callable[[Outcome], Awaitable[None]] | None,
    ) -> None:
        self.maker = maker
        self.ctx_factory = ctx_factory
        self.clock = clock
        self.after_commit = after_commit

    async def queue(
        self, who: Principal, *, status: queries.QueueFilter, limit: int, offset: int
    ) -> list[CallOut]:
        async with self.maker() as s:
            ids = await queries.queue_ids(s, status=status, scope=who.scope, limit=limit, offset=offset)
            return [redact_call(c, who) for c in await queries.load_calls(s, ids)]

    async def visible_or_404(self, who: Principal, call_id: int) -> None:
        async with self.maker() as s:
            await _visible_or_404(s, who, call_id)

    async def detail(self, call_id: int, who: Principal, route: str) -> CallDetail:
        async with self.maker() as s:
            await _visible_or_404(s, who, call_id)
            base = redact_call((await queries.load_calls(s, [call_id]))[0], who)
            timeline = await queries.timeline(s, call_id=call_id)
            responders = await queries.responders(s, call_id=call_id)
            pages = await paging.page_rows(s, call_id=call_id)
        await log_reads(
            self.maker,
            who=who,
            resident_ids=[base.resident_id],
            route=route,
            call_id=call_id,
            now=datetime.now(UTC),
        )
        return CallDetail(**base.model_dump(), timeline=timeline, responders=responders, pages=pages)

    async def staff_in_scope_or_404(self, who: Principal, staff_ids: list[str]) -> None:
        """Staff outside the caller's scope are unknown to them."""
        if who.scope is None:
            return
        async with self.maker() as s:
            stations = await queries.staff_stations(s, staff_ids=staff_ids)
        outside = [sid for sid, st in stations.items() if st not in who.scope]
        if outside:
            raise HTTPException(404, f"unknown staff: {', '.join(outside)}")

    async def act(self, who: Principal, call_id: int, action: CallAction, data: dict[str, Any]) -> None:
        now = self.clock.now()
        await self.visible_or_404(who, call_id)
        if action is CallAction.dispatch:
            await self.staff_in_scope_or_404(who, data.get("staff_ids") or [])
        actor = Actor(name=f"user:{who.username}", user_id=who.user_id)
        try:
            async with self.maker() as s, s.begin():
                out = await act(
                    s,
                    call_id=call_id,
                    action=action,
                    actor=actor,
                    body=data,
                    ctx=self.ctx_factory(),
                    now=now,
                    expected_version=data.get("expected_version"),
                )
                await queue_device_notices(s, notices=out.device_notices, now=now)
        except CallError as exc:
            raise HTTPException(exc.status, {"message": str(exc), **exc.detail}) from None
        if self.after_commit is not None:
            await self.after_commit(out)


async def _visible_or_404(session: AsyncSession, who: Principal, call_id: int) -> None:
    """A call outside the caller's scope is answered like a call that does not exist."""
    if not await call_visible(session, scope=who.scope, call_id=call_id):
        raise HTTPException(404, "no such call")


def _action_of(action: str) -> CallAction:
    try:
        return CallAction(action)
    except ValueError:
        raise HTTPException(404, f"unknown action {action!r}; one of {', '.join(CallAction)}") from None


def calls_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    *,
    ctx_factory: Callable[[], DispatchContext],
    clock: Clock,
    after_commit: Callable[[Outcome], Awaitable[None]] | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["calls"])
    # a default, not an Annotated alias: with postponed annotations FastAPI resolves
    # annotation strings in module scope, where a local alias does not exist
    who_dep = Depends(current_principal(maker, signer))
    api = _Calls(maker, ctx_factory=ctx_factory, clock=clock, after_commit=after_commit)

    @router.get("/calls", response_model=list[CallOut])
    async def list_calls(
        status: Literal["open", "closed", "all"] = "open",
        limit: Annotated[int, Query(ge=1, le=500)] = 200,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
        who: Principal = who_dep,
    ) -> list[CallOut]:
        return await api.queue(who, status=status, limit=limit, offset=offset)

    @router.get("/calls/{call_id}", response_model=CallDetail)
    async def get_call(call_id: int, who: Principal = who_dep) -> CallDetail:
        return await api.detail(call_id, who, "GET /api/v1/calls/{call_id}")

    @router.post("/calls/{call_id}/{action}", response_model=CallDetail)
    async def call_action(
        call_id: int,
        action: str,
        body: Annotated[ActionBody | None, Body()] = None,
        who: Principal = who_dep,
    ) -> CallDetail:
        if who.role == "supervisor":
            raise HTTPException(403, "supervisors have read-only access to calls")
        data = body.model_dump(exclude_none=True) if body else {}
        await api.act(who, call_id, _action_of(action), data)
        return await api.detail(call_id, who, "POST /api/v1/calls/{call_id}/{action}")

    return router

"""The responder's phone API (``/api/v1/m/…``) and its live stream.

A responder signs in like anyone else (role ``responder``, bound to a staff row) and sees
only the calls they were paged for or own. Accepting a page acknowledges the call (when
nobody has yet) and dispatches the responder, through the same call actions as the
console, so the device gets the same acks and every step is an audit row in their name.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus, RedisBus
from carecall.core.clock import Clock
from dispatcher.auth.models import Role
from dispatcher.auth.principals import Principal, TokenRejected, authenticate, current_principal
from dispatcher.auth.privacy import record_reads
from dispatcher.auth.tokens import STREAM, TokenClaims, TokenSigner
from dispatcher.calls import actions, paging
from dispatcher.calls.context import Actor, CallError, DispatchContext, Outcome
from dispatcher.calls.models import Call, CallStatus
from dispatcher.calls.outbox import queue_device_notices
from dispatcher.console.stream import CallFeed, StreamConfig, sse
from dispatcher.paging.policy import Availability, PagingPolicy
from dispatcher.responder.service import CardOut, MeOut, card_for, is_mine, me, my_cards

PHONE_ACTIONS = ("en-route", "arrive", "resolve", "escalate", "note")
# Row ids are 32-bit integers: a larger one in a path is refused (422) before it reaches
# the database, where it would overflow (found by tests/dispatcher/responder/test_hostile_sweep.py).
RowId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class AvailabilityIn(BaseModel):
    availability: Availability


class DeclineIn(BaseModel):
    reason: str = Field(default="", max_length=200)


class PhoneActionIn(BaseModel):
    outcome: str | None = Field(default=None, max_length=32)
    note: str | None = Field(default=None, max_length=2000)
    reason: str | None = Field(default=None, max_length=200)


class AnswerOut(BaseModel):
    result: Literal["accepted", "declined"]
    card: CardOut | None


@dataclass(frozen=True)
class PhoneDeps:
    """What the phone's handlers need from the process."""

    maker: async_sessionmaker[AsyncSession]
    clock: Clock
    ctx_factory: Callable[[], DispatchContext]
    policy_for: Callable[[Call], PagingPolicy]
    announce: Callable[[Outcome], Awaitable[None]]


def _staff_of(who: Principal) -> str:
    if who.role is not Role.responder or not who.staff_id:
        raise HTTPException(403, "the phone app is for responders bound to a staff member")
    return who.staff_id


async def answer_page(
    deps: PhoneDeps, page_id: int, who: Principal, *, accept: bool, reason: str
) -> AnswerOut:
    """Accept (acknowledge when nobody has, and dispatch oneself) or decline (page the next person)."""
    staff_id = _staff_of(who)
    now = deps.clock.now()
    actor = Actor(name=f"user:{who.username}", user_id=who.user_id, staff_id=staff_id)
    try:
        async with deps.maker() as s, s.begin():
            page = await paging.answer(
                s, page_id=page_id, staff_id=staff_id, accept=accept, reason=reason, now=now, actor=actor.name
            )
            call = await s.get(Call, page.call_id)
            assert call is not None
            out = await (
                _take(s, deps, call, actor, now) if accept else _pass_on(s, deps, call, page.station_id, now)
            )
            await queue_device_notices(s, notices=out.device_notices, now=now)
    except paging.PagingError as exc:
        raise HTTPException(409, str(exc)) from None
    except CallError as exc:
        raise HTTPException(exc.status, {"message": str(exc), **exc.detail}) from None
    await deps.announce(out)
    async with deps.maker() as s:
        card = await card_for(s, staff_id=staff_id, call_id=page.call_id, today=now.date())
    return AnswerOut(result="accepted" if accept else "declined", card=card)


async def _take(s: AsyncSession, deps: PhoneDeps, call: Call, actor: Actor, now: datetime) -> Outcome:
    out = Outcome(calls={call.id})
    if call.status in (CallStatus.open, CallStatus.assigned):
        out.merge(
            await actions.act(
                s,
                call_id=call.id,
                action="acknowledge",
                actor=actor,
                body={},
                now=now,
                ctx=deps.ctx_factory(),
            )
        )
    body = {"staff_ids": [actor.staff_id]}
    out.merge(
        await actions.act(
            s, call_id=call.id, action="dispatch", actor=actor, body=body, now=now, ctx=deps.ctx_factory()
        )
    )
    return out


async def _pass_on(s: AsyncSession, deps: PhoneDeps, call: Call, station_id: str, now: datetime) -> Outcome:
    # a decline moves on at once: the next person is paged now
    await paging.step(
        s,
        call_id=call.id,
        station_id=station_id,
        policy=deps.policy_for(call),
        now=now,
        ctx=deps.ctx_factory(),
    )
    return Outcome(calls={call.id})


async def phone_action(
    deps: PhoneDeps, call_id: int, action: str, data: dict[str, object], who: Principal
) -> CardOut | None:
    staff_id = _staff_of(who)
    if action not in PHONE_ACTIONS:
        raise HTTPException(404, f"unknown action {action!r}; one of {', '.join(PHONE_ACTIONS)}")
    now = deps.clock.now()
    actor = Actor(name=f"user:{who.username}", user_id=who.user_id, staff_id=staff_id)
    try:
        async with deps.maker() as s, s.begin():
            if not await is_mine(s, staff_id=staff_id, call_id=call_id):
                raise HTTPException(404, "no such call among yours")
            out = await actions.act(
                s, call_id=call_id, action=action, actor=actor, body=data, now=now, ctx=deps.ctx_factory()
            )
            await queue_device_notices(s, notices=out.device_notices, now=now)
    except CallError as exc:
        raise HTTPException(exc.status, {"message": str(exc), **exc.detail}) from None
    await deps.announce(out)
    async with deps.maker() as s:
        return await card_for(s, staff_id=staff_id, call_id=call_id, today=now.date())


async def card_frames(
    deps: PhoneDeps,
    feed: CallFeed,
    cfg: StreamConfig,
    request: Request,
    staff_id: str,
    still_signed_in: Callable[[], Awaitable[bool]],
) -> AsyncIterator[str]:
    """The phone's SSE frames: all cards at once, again whenever any of them changes."""

    async def current() -> tuple[str, list[dict[str, object]]]:
        async with deps.maker() as s:
            found = await my_cards(s, staff_id=staff_id, today=deps.clock.now().date())
        rows = [c.model_dump(mode="json") for c in found]
        return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest(), rows

    q = feed.listen()
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + cfg.max_stream_s
    try:
        yield f"retry: {cfg.retry_ms}\n\n"
        last, rows = await current()
        yield sse("cards", {"cards": rows})
        while (left := ends_at - loop.time()) > 0:
            try:
                await asyncio.wait_for(q.get(), timeout=min(cfg.heartbeat_s, left))
            except TimeoutError:
                if await request.is_disconnected():
                    return
                if not await still_signed_in():
                    yield sse("bye", {"reason": "signed_out"})
                    return
                yield sse("ping", {"at": datetime.now(UTC).isoformat()})
                continue
            while not q.empty():
                q.get_nowait()
            digest, rows = await current()
            if digest != last:
                last = digest
                yield sse("cards", {"cards": rows})
        yield sse("reconnect", {})
    finally:
        feed.leave(q)


def responder_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    bus: MemoryBus | RedisBus,
    *,
    clock: Clock,
    ctx_factory: Callable[[], DispatchContext],
    after_commit: Callable[[Outcome], Awaitable[None]] | None = None,
    paging_policy: Callable[[Call], PagingPolicy] | None = None,
    stream_config: StreamConfig | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/m", tags=["responder"])
    who_dep = Depends(current_principal(maker, signer))
    cfg = stream_config or StreamConfig()
    feed = CallFeed(bus)

    async def announce(out: Outcome) -> None:
        if after_commit is not None:
            await after_commit(out)

    deps = PhoneDeps(maker, clock, ctx_factory, paging_policy or (lambda _call: PagingPolicy()), announce)

    @router.get("/me", response_model=MeOut)
    async def get_me(who: Principal = who_dep) -> MeOut:
        async with maker() as s:
            found = await me(s, staff_id=_staff_of(who))
        if found is None:
            raise HTTPException(404, "your staff record is gone; ask an admin")
        return found

    @router.put("/availability", response_model=MeOut)
    async def set_availability(body: AvailabilityIn, who: Principal = who_dep) -> MeOut:
        async with maker() as s, s.begin():
            await paging.set_availability(
                s,
                staff_id=_staff_of(who),
                availability=body.availability,
                now=clock.now(),
                actor=f"user:{who.username}",
            )
        return await get_me(who)

    @router.get("/cards", response_model=list[CardOut])
    async def cards(who: Principal = who_dep) -> list[CardOut]:
        now = clock.now()
        async with maker() as s, s.begin():
            found = await my_cards(s, staff_id=_staff_of(who), today=now.date())
            resident_ids = [c.resident.id for c in found if c.resident]
            await record_reads(s, who=who, resident_ids=resident_ids, route="GET /api/v1/m/cards", now=now)
        return found

    @router.post("/pages/{page_id}/accept", response_model=AnswerOut)
    async def accept(page_id: RowId, who: Principal = who_dep) -> AnswerOut:
        return await answer_page(deps, page_id, who, accept=True, reason="")

    @router.post("/pages/{page_id}/decline", response_model=AnswerOut)
    async def decline(page_id: RowId, body: DeclineIn, who: Principal = who_dep) -> AnswerOut:
        return await answer_page(deps, page_id, who, accept=False, reason=body.reason)

    @router.post("/calls/{call_id}/{action}", response_model=CardOut | None)
    async def act(
        call_id: RowId,
        action: Annotated[str, Path(max_length=32)],
        body: Annotated[PhoneActionIn | None, Body()] = None,
        who: Principal = who_dep,
    ) -> CardOut | None:
        return await phone_action(
            deps, call_id, action, body.model_dump(exclude_none=True) if body else {}, who
        )

    async def principal_of(claims: TokenClaims) -> Principal | None:
        if datetime.now(UTC).timestamp() >= claims.sxp:
            return None
        try:
            async with maker() as s:
                return await authenticate(s, claims=claims)
        except TokenRejected:
            return None

    @router.get(
        "/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
    )
    async def stream(
        request: Request,
        ticket: Annotated[
            str, Query(max_length=1024, description="a ticket from POST /api/v1/auth/stream-ticket")
        ],
    ) -> StreamingResponse:
        """Events ``cards`` (all of this person's cards, whenever any of them changes),
        ``ping`` (heartbeat), ``reconnect`` and ``bye``."""
        claims = signer.decode(ticket, datetime.now(UTC), purpose=STREAM)
        who = None if claims is None else await principal_of(claims)
        if claims is None or who is None:
            raise HTTPException(401, "the stream ticket is invalid or has expired; get a new one")
        frames = card_frames(
            deps, feed, cfg, request, _staff_of(who), lambda: _signed_in(principal_of, claims)
        )
        return StreamingResponse(
            frames,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router


async def _signed_in(
    principal_of: Callable[[TokenClaims], Awaitable[Principal | None]], claims: TokenClaims
) -> bool:
    return await principal_of(claims) is not None

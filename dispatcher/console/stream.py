"""Server push for the console: ``GET /api/v1/stream``, a Server-Sent Events feed of call
changes, scoped to the caller.

Why these choices:

* SSE rather than WebSocket: the console only listens (actions go through the ordinary
  POST endpoints, which keep their 409 answers), SSE passes every proxy that passes HTTP,
  and the browser reconnects by itself.
* The event id is the audit log's sequence number read *before* the calls are loaded.
  Every change to a call writes an audit row, so "everything after seq N" is exactly what
  a page that saw event N has missed, and the record of truth answers that question
  (not this process's memory): a page that reconnects to another copy catches up too.
* ``EventSource`` cannot send an ``Authorization`` header, and a bearer token in a URL
  lands in proxy logs and browser history; so the page first gets a stream ticket
  (``POST /api/v1/auth/stream-ticket`` with its bearer token) and opens
  ``?ticket=…``. A ticket lives a minute, opens only this stream, and belongs to the
  sign-in it came from. The sign-in is checked when the stream opens and again at every
  heartbeat, so signing out, a revoked or expired sign-in or a disabled account ends the
  stream within one heartbeat.
* A stream ends by itself after ``max_stream_s`` with a ``reconnect`` event, and the page
  opens a new one at once from its last event id, losing nothing and showing no outage.
  uvicorn waits for open responses before it stops, so an endless stream would hold a
  stopping server hostage; this bounds a graceful stop to ``max_stream_s``.
* Calls that leave the caller's scope (escalated to a station they cannot see) are
  reported as ``gone`` only to a stream that has already shown them, so nobody learns of
  a call outside their subtree.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus, RedisBus
from dispatcher.auth.models import Role
from dispatcher.auth.principals import Principal, TokenRejected, authenticate
from dispatcher.auth.tokens import STREAM, TokenClaims, TokenSigner
from dispatcher.calls.queries import CallOut, load_calls
from dispatcher.calls.views import redact_call
from dispatcher.console import queries

# More changed calls than this since the page's last event: send a fresh snapshot instead.
MAX_CATCH_UP = 500


@dataclass
class StreamConfig:
    """Timings of the feed; tests shorten them."""

    heartbeat_s: float = 5.0
    max_stream_s: float = 15.0
    retry_ms: int = 1000


@dataclass
class CallFeed:
    """One bus subscription per process, fanned out to every open stream.

    One subscription instead of one per browser: with Redis that is one connection for a
    hundred operators, and the bus's own drop-oldest policy applies once.
    """

    bus: MemoryBus | RedisBus
    queues: set[asyncio.Queue[set[int]]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def listen(self) -> asyncio.Queue[set[int]]:
        q: asyncio.Queue[set[int]] = asyncio.Queue(maxsize=1000)
        self.queues.add(q)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._pump())
        return q

    def leave(self, q: asyncio.Queue[set[int]]) -> None:
        """Forget a closed stream; the last one out stops the subscription, so nothing
        outlives the streams that needed it."""
        self.queues.discard(q)
        if not self.queues and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _pump(self) -> None:
        async for msg in self.bus.subscribe("calls"):
            ids = {int(i) for i in msg.get("ids", []) if isinstance(i, int | str) and str(i).isdigit()}
            if not ids:
                continue
            for q in tuple(self.queues):
                if q.full():
                    # a stuck browser: merge everything into one pending change set
                    pending: set[int] = set()
                    while not q.empty():
                        pending |= q.get_nowait()
                    q.put_nowait(pending | ids)
                else:
                    q.put_nowait(ids)


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One SSE frame. JSON on one line, so no payload can break the framing."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def call_json(
    session: AsyncSession, *, calls: list[CallOut], who: Principal | None = None, now: datetime
) -> list[dict[str, Any]]:
    """Calls as the console's queue needs them: the API's call plus a resident brief
    (redacted for roles that see no health data, see dispatcher.auth.privacy) and, for a
    mass offline incident, its devices (queries.incident_briefs)."""
    briefs = await queries.resident_briefs(
        session, resident_ids={c.resident_id for c in calls if c.resident_id}, now=now
    )
    incidents = await queries.incident_briefs(
        session, call_ids={c.id for c in calls if c.event_class == "mass_offline"}
    )
    if who is not None:
        calls = [redact_call(c, who) for c in calls]
    out = []
    for c in calls:
        row = c.model_dump(mode="json")
        row["resident"] = briefs.get(c.resident_id or "")
        row["incident"] = incidents.get(c.id)  # a mass offline's devices: one queue line
        out.append(row)
    return out


async def live_principal(
    maker: async_sessionmaker[AsyncSession], *, claims: TokenClaims, now: datetime
) -> Principal | None:
    """The sign-in behind a ticket, if it still counts (its own expiry included)."""
    if now.timestamp() >= claims.sxp:
        return None
    try:
        async with maker() as s:
            who = await authenticate(s, claims=claims)
    except TokenRejected:
        return None
    # a responder's ticket opens the phone's stream (/api/v1/m/stream), never the console's
    return None if who.role is Role.responder else who


def resume_point(last_event_id: int | None, header: str | None) -> int | None:
    """Where to resume: the browser's own reconnect (``Last-Event-ID``) wins over the query."""
    if header and header.strip().isdigit():
        return int(header.strip())
    return last_event_id


@dataclass
class _Stream:
    """One open stream: what it has shown, and how it turns bus changes into frames."""

    maker: async_sessionmaker[AsyncSession]
    cfg: StreamConfig
    feed: CallFeed
    queue: asyncio.Queue[set[int]]
    request: Request
    claims: TokenClaims
    who: Principal
    resume: int | None
    shown: set[int] = field(default_factory=set)

    async def frames(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + self.cfg.max_stream_s
        try:
            yield f"retry: {self.cfg.retry_ms}\n\n"
            yield await self._opening()
            while True:
                left = ends_at - loop.time()
                if left <= 0:
                    yield sse("reconnect", {})
                    return
                try:
                    ids = await asyncio.wait_for(self.queue.get(), timeout=min(self.cfg.heartbeat_s, left))
                except TimeoutError:
                    frame, carry_on = await self._heartbeat()
                    if frame is not None:
                        yield frame
                    if not carry_on:
                        return
                    continue
                frame = await self._changes(ids)
                if frame is not None:
                    yield frame
        finally:
            self.feed.leave(self.queue)

    async def _opening(self) -> str:
        """The first event: the calls changed since the page's last event when there are
        few enough, else a snapshot of every open call in scope."""
        now = datetime.now(UTC)
        async with self.maker() as s:
            seq = await queries.head_seq(s)
            changed: list[int] | None = None
            if self.resume is not None and self.resume <= seq:
                touched = await queries.calls_changed_since(s, seq=self.resume, limit=MAX_CATCH_UP + 1)
                if len(touched) <= MAX_CATCH_UP:
                    changed, _ = await queries.scoped_ids(s, who=self.who, ids=touched)
            if changed is None:
                calls = await load_calls(s, await queries.open_call_ids(s, who=self.who))
                self.shown |= {c.id for c in calls}
                return sse("snapshot", {"calls": await call_json(s, calls=calls, who=self.who, now=now)}, seq)
            calls = await load_calls(s, changed)
            self.shown |= {c.id for c in calls}
            rows = await call_json(s, calls=calls, who=self.who, now=now)
            return sse("calls", {"calls": rows, "gone": []}, seq)

    async def _heartbeat(self) -> tuple[str | None, bool]:
        """(frame to send, whether the stream goes on) when nothing changed for a while:
        the sign-in is checked again, so signing out ends the stream within a heartbeat."""
        if await self.request.is_disconnected():
            return None, False
        now = datetime.now(UTC)
        if await live_principal(self.maker, claims=self.claims, now=now) is None:
            return sse("bye", {"reason": "signed_out"}), False
        # an event, not a comment: the page can only watch what it is given
        return sse("ping", {"at": now.isoformat()}), True

    async def _changes(self, ids: set[int]) -> str | None:
        """The changed calls in scope, and those that left it after this stream showed them."""
        while not self.queue.empty():
            ids |= self.queue.get_nowait()
        async with self.maker() as s:
            seq = await queries.head_seq(s)
            # the changed calls this stream's scope sees, read with the scope's filter: no
            # separate query splitting the ids first (a round trip per frame)
            calls = await load_calls(s, sorted(ids), scope=self.who.scope)
            rows = await call_json(s, calls=calls, who=self.who, now=datetime.now(UTC))
        hidden = ids - {c.id for c in calls}  # not visible (or gone from the database)
        gone = sorted(cid for cid in hidden if cid in self.shown)
        self.shown |= {c.id for c in calls}
        self.shown -= set(gone)
        if calls or gone:
            return sse("calls", {"calls": rows, "gone": gone}, seq)
        return None


def stream_router(
    maker: async_sessionmaker[AsyncSession],
    signer: TokenSigner,
    bus: MemoryBus | RedisBus,
    config: StreamConfig | None = None,
) -> APIRouter:
    """``GET /api/v1/stream``: events ``snapshot`` (all open calls in scope), ``calls``
    (``{"calls": [...changed...], "gone": [ids]}``), ``ping`` (heartbeat), ``reconnect``
    (this stream ends; open a new one from the last id) and ``bye`` (token no longer valid)."""
    cfg = config or StreamConfig()
    feed = CallFeed(bus)
    router = APIRouter(prefix="/api/v1", tags=["stream"])

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
        last_event_id: Annotated[
            int | None, Query(ge=0, description="resume after this event id (for a new EventSource)")
        ] = None,
        last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        now = datetime.now(UTC)
        claims = signer.decode(ticket, now, purpose=STREAM)
        who = None if claims is None else await live_principal(maker, claims=claims, now=now)
        if claims is None or who is None:
            raise HTTPException(
                401,
                "the stream ticket is invalid or has expired; get a new one (POST /api/v1/auth/stream-ticket)",
            )
        one = _Stream(
            maker=maker,
            cfg=cfg,
            feed=feed,
            queue=feed.listen(),
            request=request,
            claims=claims,
            who=who,
            resume=resume_point(last_event_id, last_event_id_header),
        )
        return StreamingResponse(
            one.frames(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router

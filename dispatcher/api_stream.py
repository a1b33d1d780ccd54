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
* ``EventSource`` cannot send an ``Authorization`` header, so the bearer token travels as
  ``?token=``. It is checked when the stream opens and again at every heartbeat, so an
  expired token or a disabled account ends the stream within one heartbeat.
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
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.api_calls import CallOut, load_calls
from dispatcher.api_console import resident_briefs
from dispatcher.auth import Principal, TokenSigner, in_scope, load_principal
from dispatcher.bus import MemoryBus, RedisBus
from dispatcher.models import OPEN_STATUSES, AuditRow, Call

# More changed calls than this since the page's last event: send a fresh snapshot instead.
MAX_CATCH_UP = 500
OPEN = [s.value for s in OPEN_STATUSES]


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


async def call_json(session: AsyncSession, calls: list[CallOut]) -> list[dict[str, Any]]:
    """Calls as the console's queue needs them: the API's call plus a resident brief."""
    briefs = await resident_briefs(session, {c.resident_id for c in calls if c.resident_id})
    out = []
    for c in calls:
        row = c.model_dump(mode="json")
        row["resident"] = briefs.get(c.resident_id or "")
        out.append(row)
    return out


async def head_seq(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.coalesce(func.max(AuditRow.seq), 0))) or 0)


async def scoped_ids(session: AsyncSession, who: Principal, ids: set[int]) -> tuple[list[int], list[int]]:
    """Split call ids into (visible to ``who``, not visible)."""
    if not ids:
        return [], []
    rows = (await session.execute(select(Call.id, Call.station_id).where(Call.id.in_(sorted(ids))))).all()
    seen = [cid for cid, st in rows if in_scope(who, st)]
    return sorted(seen), sorted(ids - set(seen))


async def snapshot(session: AsyncSession, who: Principal) -> list[CallOut]:
    stmt = select(Call.id).where(Call.status.in_(OPEN))
    if who.scope is not None:
        stmt = stmt.where(Call.station_id.in_(sorted(who.scope)))
    ids = list(await session.scalars(stmt.order_by(Call.priority, Call.id).limit(500)))
    return await load_calls(session, ids)


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

    async def principal_of(token: str) -> Principal | None:
        user_id = signer.verify(token, datetime.now(UTC))
        if user_id is None:
            return None
        async with maker() as s:
            return await load_principal(s, user_id)

    @router.get(
        "/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
    )
    async def stream(
        request: Request,
        token: Annotated[str, Query(description="the bearer token (EventSource cannot send headers)")],
        last_event_id: Annotated[
            int | None, Query(ge=0, description="resume after this event id (for a new EventSource)")
        ] = None,
        last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> StreamingResponse:
        who = await principal_of(token)
        if who is None:
            raise HTTPException(401, "the token is invalid or has expired; sign in again")
        resume = last_event_id
        if last_event_id_header and last_event_id_header.strip().isdigit():
            resume = int(last_event_id_header.strip())  # the browser's own reconnect wins
        q = feed.listen()

        async def frames() -> AsyncIterator[str]:
            shown: set[int] = set()
            loop = asyncio.get_running_loop()
            ends_at = loop.time() + cfg.max_stream_s
            try:
                yield f"retry: {cfg.retry_ms}\n\n"
                async with maker() as s:
                    seq = await head_seq(s)
                    changed: list[int] | None = None
                    if resume is not None and resume <= seq:
                        touched = set(
                            await s.scalars(
                                select(AuditRow.call_id)
                                .where(AuditRow.seq > resume, AuditRow.call_id.is_not(None))
                                .distinct()
                                .limit(MAX_CATCH_UP + 1)
                            )
                        )
                        if len(touched) <= MAX_CATCH_UP:
                            changed, _ = await scoped_ids(s, who, {c for c in touched if c is not None})
                    if changed is None:
                        calls = await snapshot(s, who)
                        shown |= {c.id for c in calls}
                        yield sse("snapshot", {"calls": await call_json(s, calls)}, seq)
                    else:
                        calls = await load_calls(s, changed)
                        shown |= {c.id for c in calls}
                        yield sse("calls", {"calls": await call_json(s, calls), "gone": []}, seq)
                while True:
                    left = ends_at - loop.time()
                    if left <= 0:
                        yield sse("reconnect", {})
                        return
                    try:
                        ids = await asyncio.wait_for(q.get(), timeout=min(cfg.heartbeat_s, left))
                    except TimeoutError:
                        if await request.is_disconnected():
                            return
                        current = await principal_of(token)
                        if current is None:
                            yield sse("bye", {"reason": "signed_out"})
                            return
                        # an event, not a comment: the page can only watch what it is given
                        yield sse("ping", {"at": datetime.now(UTC).isoformat()})
                        continue
                    while not q.empty():
                        ids |= q.get_nowait()
                    async with maker() as s:
                        seq = await head_seq(s)
                        visible, hidden = await scoped_ids(s, who, ids)
                        calls = await load_calls(s, visible)
                        rows = await call_json(s, calls)
                    gone = [cid for cid in hidden if cid in shown]
                    shown |= {c.id for c in calls}
                    shown -= set(gone)
                    if calls or gone:
                        yield sse("calls", {"calls": rows, "gone": gone}, seq)
            finally:
                feed.leave(q)

        return StreamingResponse(
            frames(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router

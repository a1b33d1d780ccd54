"""The event writer: the alarm path from a parsed event to a stored row and its ack.

Events (the devices' own, and those the rules and supervision derive) are queued, then
committed in batches with ON CONFLICT DO NOTHING on (device, id) (device_gateway/store.py);
only after the commit is ``received`` acked, and a bus hint (channel ``events``) tells the
dispatcher. A resent event is the same row and is acked again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core import metrics as m
from carecall.core.bus import MemoryBus, RedisBus
from carecall.core.sqlite_gate import alarm_first
from device_gateway import protocol as p
from device_gateway.downlink import Downlink
from device_gateway.stats import GatewayStats
from device_gateway.store import EventRow, dialect, insert_events

log = structlog.get_logger("carecall.gateway")

Bus = MemoryBus | RedisBus
# how a row that cannot be stored is counted: (device, topic, payload, rejection)
RejectFn = Callable[[str, str, bytes, p.Rejection], None]


class EventWriter:
    def __init__(
        self,
        *,
        maker: async_sessionmaker[AsyncSession],
        bus: Bus,
        name: str,
        batch_max: int,
        downlink: Downlink,
        stats: GatewayStats,
        rejects: m.RejectCounter,
        reject: RejectFn,
    ) -> None:
        self.maker = maker
        self.bus = bus
        self.name = name
        self.batch_max = batch_max
        self.downlink = downlink
        self.stats = stats
        self.rejects = rejects
        self.reject = reject
        self.queue: asyncio.Queue[EventRow] = asyncio.Queue(maxsize=100_000)
        self.committing = False
        self.enqueued = 0  # events taken into the queue so far
        self.on_stored: Callable[[list[EventRow]], Awaitable[None]] | None = None

    @property
    def alarm_work(self) -> bool:
        """Events waiting to be stored or being stored (the intake then yields often)."""
        return self.committing or not self.queue.empty()

    def enqueue(self, row: EventRow) -> None:
        try:
            self.queue.put_nowait(row)
            self.enqueued += 1
        except asyncio.QueueFull:
            # Back-pressure: not acked, so the device resends once we have room.
            self.rejects.add(row.device_id, "overloaded")
            log.warning("gateway.queue_full", device=row.device_id, event=row.event_id)
        m.QUEUE_DEPTH.labels("events").set(self.queue.qsize())

    async def run(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            while len(batch) < self.batch_max and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.committing = True
            try:
                await self.commit(batch)
            finally:
                self.committing = False
            m.QUEUE_DEPTH.labels("events").set(self.queue.qsize())

    async def drained(self) -> None:
        """Until the queue is empty (the stop path: ``run`` empties it by itself)."""
        while not self.queue.empty():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def commit(self, batch: list[EventRow]) -> None:
        # On SQLite the devices wait for this commit's ack: it takes the write lock before
        # any other waiting writer (carecall/core/sqlite_gate.py; no-op on PostgreSQL).
        with alarm_first():
            new = await self._store(batch)
        await self.after_commit(batch, new)

    async def _store(self, batch: list[EventRow]) -> set[tuple[str, str]]:
        backoff = 0.1
        while True:
            try:
                new = await self._insert(batch)
                break
            except IntegrityError as exc:
                # A row that cannot be stored (device deleted meanwhile) must not block
                # the others: store one by one and reject the bad ones.
                log.warning("gateway.batch_integrity_error", error=str(exc.orig)[:200], size=len(batch))
                return await self._commit_one_by_one(batch)
            except (OperationalError, DBAPIError, OSError) as exc:
                m.DB_ERRORS.inc()
                log.warning("gateway.db_unavailable", error=str(exc)[:200], retry_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        return new

    async def _insert(self, batch: list[EventRow]) -> set[tuple[str, str]]:
        """Store the rows and commit; the new ones' keys.

        On PostgreSQL the batch is one INSERT … ON CONFLICT DO NOTHING RETURNING, atomic
        and durable by itself, so it runs without BEGIN and COMMIT: one round trip instead
        of three before the devices are acked (each round trip a socket write that hands
        the CPU to a backend on a shared core). SQLite commits as before."""
        async with self.maker() as session:
            if dialect(session) == "postgresql":
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                return await insert_events(session, batch)
            async with session.begin():
                return await insert_events(session, batch)

    async def _commit_one_by_one(self, batch: list[EventRow]) -> set[tuple[str, str]]:
        new: set[tuple[str, str]] = set()
        for row in batch:
            try:
                new |= await self._insert([row])
            except IntegrityError as exc:
                self.reject(
                    row.device_id,
                    p.topic_for(row.device_id, p.Channel.events),
                    b"",
                    p.Rejection(p.Reason.unknown_device, str(exc.orig)[:200]),
                )
                row.ack = False
        return new

    async def after_commit(self, batch: list[EventRow], new: set[tuple[str, str]]) -> None:
        """Count, ack ``received`` where the device awaits it, and tell the dispatcher."""
        now = time.monotonic()
        m.BATCH_SIZE.observe(len(batch))
        stored: list[EventRow] = []
        for row in batch:
            key = (row.device_id, row.event_id)
            if key in new:
                new.discard(key)
                stored.append(row)
                m.EVENTS_STORED.labels(row.source).inc()
                self.stats.events_stored += 1
            else:
                m.EVENTS_DUPLICATE.inc()
                self.stats.events_duplicate += 1
            if row.ack:
                self.downlink.ack(row.device_id, row.event_id, p.AckState.received)
                latency = now - row.t_arrived
                m.ACK_LATENCY.observe(latency)
                if len(self.stats.ack_latencies_ms) < 1_000_000:
                    self.stats.ack_latencies_ms.append(latency * 1000)
        if stored:
            await self.bus.publish("events", {"count": len(stored), "gateway": self.name})
            if self.on_stored is not None:
                await self.on_stored(stored)

"""Live fan-out between processes: "new events stored", "call changed", ….

A hint, never the record: the database is the truth and every consumer can catch up
from it, so a lost notification delays work by one poll interval and loses nothing.
In one process (the demo) an in-memory bus; across copies, Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import structlog

log = structlog.get_logger("carecall.bus")


class Bus(Protocol):
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...

    def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]: ...

    async def close(self) -> None: ...


class MemoryBus:
    """Fan-out to every subscriber in this process; slow subscribers drop oldest."""

    def __init__(self, max_queue: int = 10_000) -> None:
        self._subs: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._max = max_queue
        self.dropped = 0

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        for q in tuple(self._subs.get(channel, ())):
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
                self.dropped += 1
            q.put_nowait(message)

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._max)
        self._subs.setdefault(channel, set()).add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subs[channel].discard(q)

    async def close(self) -> None:
        self._subs.clear()


class RedisBus:
    """Redis pub/sub; reconnects by itself. Channels are prefixed ``carecall:``."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url, decode_responses=True, health_check_interval=10)
        self.failed_publishes = 0

    @property
    def client(self) -> Any:
        return self._redis

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        try:
            await self._redis.publish(f"carecall:{channel}", json.dumps(message, separators=(",", ":")))
        except Exception as exc:  # a hint only: count, log, go on
            self.failed_publishes += 1
            log.warning("bus.publish_failed", channel=channel, error=str(exc))

    async def subscribe(self, channel: str) -> AsyncIterator[dict[str, Any]]:
        backoff = 0.2
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(f"carecall:{channel}")
                backoff = 0.2
                async for raw in pubsub.listen():
                    if raw.get("type") != "message":
                        continue
                    try:
                        yield json.loads(raw["data"])
                    except (ValueError, TypeError):
                        log.warning("bus.bad_message", channel=channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus.subscribe_lost", channel=channel, error=str(exc), retry_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        await self._redis.aclose()


def make_bus(redis_url: str | None) -> MemoryBus | RedisBus:
    return RedisBus(redis_url) if redis_url else MemoryBus()

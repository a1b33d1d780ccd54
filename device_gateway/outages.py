"""The gateway's own view of the broker: when its connection was lost, and when back.

A broker that restarts (gracefully) publishes every connected device's will: hundreds of
``offline`` events within a second. The dispatcher reads them as one "broker restart"
incident instead of a trouble call per home (dispatcher.incidents.service) when a gateway copy
recorded, here, that it lost the broker at the same moment. One row per outage per
gateway copy in ``broker_outages``: (gateway, lost_at, back_at).

Recording never gets in the way of reconnecting: the writes run in a task of their own,
one after another, and a failed write is logged and dropped (the outage is a hint for the
dispatcher; the device events themselves are stored as always). A gateway stopping on
purpose records nothing: only a lost connection is an outage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from device_gateway.models import BrokerOutage

__all__ = ["OutageRecorder", "record_back", "record_lost"]

log = structlog.get_logger("carecall.gateway")


async def record_lost(session: AsyncSession, gateway: str, at: datetime) -> int:
    """A new outage of this gateway copy, not over yet. Its id."""
    row = BrokerOutage(gateway=gateway, lost_at=at, back_at=None)
    session.add(row)
    await session.flush()
    return row.id


async def record_back(session: AsyncSession, gateway: str, at: datetime, lost_at: datetime | None) -> int:
    """Close this copy's open outages (back at ``at``); when none is open but the copy
    knows it lost the broker at ``lost_at`` (the first write failed), the whole outage.
    The number of rows written."""
    res = await session.execute(
        update(BrokerOutage)
        .where(BrokerOutage.gateway == gateway, BrokerOutage.back_at.is_(None), BrokerOutage.lost_at <= at)
        .values(back_at=at)
        .execution_options(synchronize_session=False)
    )
    n = int(res.rowcount or 0)  # type: ignore[attr-defined]
    if n == 0 and lost_at is not None:
        known = await session.scalar(
            select(BrokerOutage.id).where(BrokerOutage.gateway == gateway, BrokerOutage.lost_at == lost_at)
        )
        if known is None:
            session.add(BrokerOutage(gateway=gateway, lost_at=lost_at, back_at=at))
            n = 1
    return n


class OutageRecorder:
    """Called by the gateway's connection loop: :meth:`lost` when its broker connection
    failed, :meth:`back` when it is subscribed again (and at the first connection, which
    closes an outage a crashed predecessor of this copy left open)."""

    def __init__(self, maker: async_sessionmaker[AsyncSession], gateway: str, clock: Clock) -> None:
        self.maker = maker
        self.gateway = gateway
        self.clock = clock
        self._lost_at: datetime | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def lost(self) -> None:
        at = self.clock.now()
        self._lost_at = at
        self._spawn(self._write_lost(at))

    def back(self) -> None:
        at, lost_at = self.clock.now(), self._lost_at
        self._lost_at = None
        self._spawn(self._write_back(at, lost_at))

    async def settle(self) -> None:
        """Wait for the writes started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_lost(self, at: datetime) -> None:
        async with self._lock:  # in order: a "back" never overtakes its "lost"
            try:
                async with self.maker() as session, session.begin():
                    await record_lost(session, self.gateway, at)
                log.warning("gateway.broker_outage", gateway=self.gateway, lost_at=at.isoformat())
            except Exception as exc:
                log.warning("gateway.broker_outage_not_recorded", gateway=self.gateway, error=str(exc)[:200])

    async def _write_back(self, at: datetime, lost_at: datetime | None) -> None:
        async with self._lock:
            try:
                async with self.maker() as session, session.begin():
                    n = await record_back(session, self.gateway, at, lost_at)
                if n:
                    log.info("gateway.broker_back", gateway=self.gateway, back_at=at.isoformat())
            except Exception as exc:
                log.warning("gateway.broker_outage_not_recorded", gateway=self.gateway, error=str(exc)[:200])

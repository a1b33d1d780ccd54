"""The service-level watch: record the levels orders missed and page whoever runs the
order — first the provider's manager (a station's own order: the station's managers),
then, when the order is still not back within the level a configured delay later
(config/services.yaml ``breach_pages.station_after_s``), the station that holds it.
Never the emergency ladder: nothing here opens or touches a call, its timers or its
escalation.

The pages are outbox rows (dispatcher/notifications/service_pages.py) written in the
transaction that records the breach, so a crash cannot lose one; the dispatchers
deliver and retry them like every notification, after any call notification waiting at
the same time. ``check_once`` is the timer hook (one pass, its own transaction; the open
orders are locked, so dispatcher copies take turns and record each step once; on SQLite,
whose lock is the whole database's, only after a plain read found a step due); ``run``
repeats it until stopped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from dispatcher.audit import service as audit
from dispatcher.notifications.service_pages import ORDER_BREACH, queue_service_page
from dispatcher.orders.catalogue import BreachPages
from dispatcher.orders.service import breaches_due, record_breaches

__all__ = ["PURPOSE", "BreachPage", "check_once", "run"]

PURPOSE = ORDER_BREACH


@dataclass(frozen=True)
class BreachPage:
    order_id: int
    level: str
    step: str  # manager, station
    targets: tuple[str, ...]  # outbox targets: phone:NUMBER, user:LOGIN, staff:ID, station:ID


async def check_once(
    maker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    channel: str,
    settings: BreachPages | None = None,
) -> list[BreachPage]:
    """Record every step due at ``now`` and queue its pages, in one transaction."""
    after_s = (settings or BreachPages()).station_after_s
    pages: list[BreachPage] = []
    async with maker() as s:
        # SQLite has one writer: look first, without its lock, and take it only when a
        # step is due (most rounds find none; one falling due meanwhile is the next round's)
        if s.get_bind().dialect.name == "sqlite" and not await breaches_due(
            s, now=now, station_after_s=after_s
        ):
            return pages
    async with maker() as s, s.begin():
        if s.get_bind().dialect.name == "sqlite":
            # one writer: hold the write lock before reading, so another copy's commit
            # can never turn this transaction's snapshot stale halfway
            await audit.lock_head(s)
        # PostgreSQL: the open orders FOR UPDATE first, the chain's lock at the first
        # audit row — the order the orders API locks in (order row, then chain)
        for p in await record_breaches(s, now=now, station_after_s=after_s):
            queue_service_page(
                s,
                purpose=PURPOSE,
                targets=p.targets,
                body={
                    "order_id": p.order.id,
                    "kind": p.order.kind,
                    "level": p.level,
                    "step": p.step.value,
                    "provider_id": p.order.provider_id,
                    "station_id": p.order.assignee_station_id or p.order.station_id,
                    "resident_id": p.order.resident_id,
                },
                channel=channel,
                now=now,
                order_id=p.order.id,
            )
            pages.append(BreachPage(p.order.id, p.level, p.step.value, p.targets))
    return pages


async def run(
    maker: async_sessionmaker[AsyncSession],
    *,
    clock: Clock,
    channel: str,
    stop: asyncio.Event,
    settings: BreachPages | None = None,
    interval_s: float = 30.0,
) -> None:
    """Check every ``interval_s`` until ``stop`` is set."""
    while not stop.is_set():
        await check_once(maker, now=clock.now(), channel=channel, settings=settings)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            continue

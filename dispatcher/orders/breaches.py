"""The service-level watch: record the levels orders missed and page whoever runs the
order — the provider's manager, or the station that holds it. Never the emergency ladder:
nothing here touches calls, their timers or their escalation.

``check_once`` is the timer hook (one pass, its own transaction); ``run`` repeats it until
stopped. The page is sent through a notifier after the commit; the breach itself is in
the audit log whether or not the page gets through (a failed page is logged, without the
phone number).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from dispatcher.notifications.notifiers import Message, Notifier, NotifyError
from dispatcher.orders.models import Provider
from dispatcher.orders.service import record_breaches

__all__ = ["PURPOSE", "BreachPage", "check_once", "run"]

log = structlog.get_logger("carecall.orders")
PURPOSE = "order_breach"


@dataclass(frozen=True)
class BreachPage:
    order_id: int
    level: str
    target: str  # phone:NUMBER of the provider's manager, else station:ID
    body: dict[str, object]


async def check_once(
    maker: async_sessionmaker[AsyncSession], *, now: datetime, notifier: Notifier | None
) -> list[BreachPage]:
    """Record every level newly missed at ``now`` and page each order's manager."""
    pages: list[BreachPage] = []
    async with maker() as s, s.begin():
        for order, level in await record_breaches(s, now=now):
            provider = await s.get(Provider, order.provider_id) if order.provider_id else None
            if provider is not None and provider.manager_phone:
                target = f"phone:{provider.manager_phone}"
            else:
                target = f"station:{order.assignee_station_id or order.station_id}"
            body: dict[str, object] = {
                "order_id": order.id,
                "kind": order.kind,
                "level": level,
                "provider_id": order.provider_id,
                "station_id": order.station_id,
            }
            pages.append(BreachPage(order.id, level, target, body))
    if notifier is not None:
        for page in pages:
            try:
                # call_id 0: an order is not a call (the message names the order)
                await notifier.send(Message(0, 0, PURPOSE, page.target, page.body))
            except NotifyError as exc:
                log.warning(
                    "order_breach_page_failed", order=page.order_id, level=page.level, error=str(exc)[:200]
                )
    return pages


async def run(
    maker: async_sessionmaker[AsyncSession],
    *,
    clock: Clock,
    notifier: Notifier | None,
    stop: asyncio.Event,
    interval_s: float = 30.0,
) -> None:
    """Check every ``interval_s`` until ``stop`` is set."""
    while not stop.is_set():
        await check_once(maker, now=clock.now(), notifier=notifier)
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            continue

"""The outbox's way into the channels: a notifier that, for the purposes
``config/notifications.yaml`` routes, delivers a notification through ``deliver`` (SMS,
voice, robots, e-mail with retry, failover and the cost guard), and hands every other
notification to the plain notifier (log, webhook) as before.

The outbox (dispatcher/engine/outbox_channels.py) resolves the person, composes the
notice (dispatcher/notifications/compose.py), asks :meth:`ChannelNotifier.deliver` and
records each attempt. ``app`` in a route is the responder app's live stream, which the
page itself already reaches; here it is skipped.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.notifications.channels.config import (
    NotificationsConfig,
    delivery_policy,
    load_notifications_config,
)
from dispatcher.notifications.channels.delivery import (
    Attempt,
    CostAlert,
    CostCounters,
    DeliveryOutcome,
    InMemoryCostCounters,
    deliver,
)
from dispatcher.notifications.channels.models import Channel, Notice, Purpose
from dispatcher.notifications.channels.order import resolve_order
from dispatcher.notifications.channels.policy import DeliveryPolicy
from dispatcher.notifications.channels.registry import build_channels, close_all
from dispatcher.notifications.compose import channel_purpose
from dispatcher.notifications.cost_ledger import SharedCostCounters, alert_key
from dispatcher.notifications.notifiers import Message, Notifier

log = structlog.get_logger("carecall.notify")

_ALERT_MEMORY = 10_000


class ChannelNotifier(Notifier):
    """Channels for the routed purposes, ``fallback`` for the rest."""

    name = "channels"

    def __init__(
        self,
        cfg: NotificationsConfig,
        channels: Mapping[str, Channel],
        fallback: Notifier,
        *,
        counters: CostCounters | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.cfg = cfg
        self.channels = dict(channels)
        self.fallback = fallback
        self.policy: DeliveryPolicy = delivery_policy(cfg)
        self.counters: CostCounters = counters or InMemoryCostCounters()
        self._sleep = sleep
        self._jitter = jitter
        self._alerted: set[tuple[str, str, int | None]] = set()

    def share_budget(self, maker: async_sessionmaker[AsyncSession], actor: str) -> None:
        """Count the cost guard's sends from the database (every copy's audit rows), so the
        dispatcher copies share one budget; ``actor`` is the name this copy's rows carry."""
        self.counters = SharedCostCounters(maker, actor)

    def order(self, purpose: str, person: Sequence[str] = ()) -> list[Channel]:
        """The channels a notification of this outbox purpose goes through (empty: the
        fallback notifier's), in the person's own order when they have one."""
        p = channel_purpose(purpose)
        if p is None:
            return []
        available = {n: c.kind.value for n, c in self.channels.items()}
        if p is Purpose.page:  # the page itself is the app's channel: chosen, never sent here
            available["app"] = "app"
        names = resolve_order(self.cfg.routing.get(p, []), available, person)
        return [self.channels[n] for n in names if n in self.channels]

    def handles(self, purpose: str) -> bool:
        return bool(self.order(purpose))

    async def send(self, message: Message) -> str:
        return await self.fallback.send(message)

    async def deliver(
        self,
        notice: Notice,
        purpose: str,
        *,
        on_attempt: Callable[[Attempt], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> DeliveryOutcome:
        if isinstance(self.counters, SharedCostCounters) and self.order(purpose, notice.channels):
            await self.counters.refresh(notice.call_id, clock())
        return await deliver(
            notice,
            self.order(purpose, notice.channels),
            self.policy,
            self.counters,
            on_attempt=on_attempt,
            sleep=self._sleep,
            clock=clock,
            jitter=self._jitter,
        )

    def new_alerts(self, alerts: list[CostAlert], now: float) -> list[CostAlert]:
        """The cost alerts not raised before: once per call for a per-call cap, once per
        clock hour for an hourly one (the guard raises one on every blocked send) — by any
        copy, when the budget is shared (their ``cost_guard_hit`` rows), else by this one."""
        shared = self.counters if isinstance(self.counters, SharedCostCounters) else None
        fresh = []
        for a in alerts:
            key = alert_key(a.kind.value, a.scope.value, a.call_id, now)
            if key in self._alerted or (shared is not None and shared.raised(key)):
                continue
            if len(self._alerted) >= _ALERT_MEMORY:
                self._alerted.clear()
            self._alerted.add(key)
            fresh.append(a)
        return fresh

    async def close(self) -> None:
        await close_all(self.channels)
        await self.fallback.close()


def outbox_notifier(
    fallback: Notifier, notifications_file: Path | None, env: Mapping[str, str] | None = None
) -> Notifier:
    """The dispatcher's notifier: ``fallback`` alone without a notifications file (today's
    behaviour), else the channels it configures in front of it. A malformed file or a
    missing secret fails here, at start, naming it."""
    if notifications_file is None:
        return fallback
    cfg = load_notifications_config(notifications_file)
    notifier = ChannelNotifier(cfg, build_channels(cfg, env), fallback)
    log.info(
        "notify.channels",
        channels=sorted(notifier.channels),
        routed=sorted(p.value for p, names in cfg.routing.items() if names),
    )
    return notifier

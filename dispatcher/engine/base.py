"""What every loop of the dispatcher process shares: its settings, sessions, clock, bus,
the events that wake its loops, its figures, and how it announces what changed.

The loops (intake_loop, timer_loop, outbox_loop with mqtt) are each a class over this
state; ``dispatcher.engine.process.Dispatcher`` is all of them in one object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import aiomqtt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus, RedisBus
from carecall.core.clock import Clock
from config.settings import Settings
from device_gateway.mqtt import MqttTarget
from dispatcher.calls.context import DispatchContext, Outcome
from dispatcher.notifications.notifiers import Notifier


@dataclass
class DispatcherStats:
    events: int = 0
    timers_fired: int = 0
    timers_stale: int = 0
    timer_late_ms: list[float] = field(default_factory=list)
    notifications_sent: int = 0
    notifications_failed: int = 0
    device_acks: int = 0
    repairs: int = 0


RETRY_LOOK_S = 1.0  # at most this long between looks for failed items due again


class DispatcherState:
    """The state of one dispatcher copy (set by ``Dispatcher.__init__``)."""

    settings: Settings
    maker: async_sessionmaker[AsyncSession]
    bus: MemoryBus | RedisBus
    clock: Clock
    mqtt: MqttTarget | None
    notifier: Notifier
    ctx: DispatchContext
    name: str
    stats: DispatcherStats
    _wake_intake: asyncio.Event
    _wake_outbox: asyncio.Event
    _wake_timers: asyncio.Event
    # set only while connected to the broker (dispatcher.engine.mqtt)
    _client: aiomqtt.Client | None
    on_calls_changed: Callable[[set[int]], Awaitable[None]] | None
    max_handling_attempts: int
    handling_retry_s: float
    # loop name -> time.monotonic() of its last completed round (read by the stall monitor,
    # dispatcher.health.monitor)
    heartbeats: dict[str, float]
    loops: frozenset[str]  # the loops this copy runs (settings.dispatcher_loops)
    # kind ("event", "timer") -> the platform time this copy last looked for failed items
    _retry_looked: dict[str, datetime]

    def _retry_look_due(self, kind: str) -> bool:
        """Whether to look for failed events or timers due for another attempt now.

        A failed item waits ``handling_retry_s`` or more before its retry, so looking at
        most every half of that (and at most every RETRY_LOOK_S) delays no retry by more
        than that: a busy loop no longer spends a transaction of its own (three round trips)
        on the failures table every round."""
        now = self.clock.now()
        last = self._retry_looked.get(kind)
        every = min(RETRY_LOOK_S, self.handling_retry_s / 2)
        if last is not None and last <= now and (now - last).total_seconds() < every:
            return False
        self._retry_looked[kind] = now
        return True

    # what this copy's timer loop sleeps until (platform time), None while it runs a pass
    # or has no timer to wait for: a new timer due sooner wakes it, a later one need not
    _timers_sleep_until: datetime | None = None

    def _wake_timers_for(self, due: datetime) -> None:
        """Wake the timer loop for a timer due at ``due`` if it would sleep past it."""
        until = self._timers_sleep_until
        if until is None or due < until:
            self._wake_timers.set()

    async def _announce(self, out: Outcome, *, opened: bool = False) -> None:
        """Right after a commit, first thing: tell consoles which calls changed; then wake
        the outbox for what the transaction queued and, after intake opened calls whose
        timers are due before the timer loop would wake anyway, the timer loop. (Every
        step due when a call opens fires with it, so an intake round used to wake the
        timer loop for nothing: two queries a round, ten rounds a second at 100 alarms/s.)"""
        if out.calls:
            await self.bus.publish("calls", {"ids": sorted(out.calls), "by": self.name})
            if self.on_calls_changed is not None:
                await self.on_calls_changed(out.calls)
        if out.device_notices or out.notifications:
            self._wake_outbox.set()
            if "outbox" not in self.loops:  # another copy sends them: a hint on the bus
                await self.bus.publish("outbox", {"count": len(out.device_notices)})
        if opened and out.first_timer_at is not None:
            if "timers" in self.loops:
                self._wake_timers_for(out.first_timer_at)
            else:  # another copy fires them: a hint on the bus, with when
                await self.bus.publish("timers", {"due": out.first_timer_at.isoformat()})

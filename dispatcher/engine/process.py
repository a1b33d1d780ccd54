"""The dispatcher process: stored events → calls, due timers → escalation, outbox → people
and devices, and a watchdog over it all.

Four loops, each a short transaction at a time, safe to run in several copies at once:
events are claimed once (event_intake's key), timers and outbox rows with SKIP LOCKED on
PostgreSQL. A bus hint wakes a loop early; a poll interval makes the hint optional. Each
loop is its own module (intake_loop, timer_loop, outbox_loop and mqtt); what they do when
their work fails is dispatcher.engine.handling. Every loop records its completed rounds in
``heartbeats``, which the stall monitor (dispatcher.health.monitor) watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus, RedisBus
from carecall.core.clock import Clock
from config.settings import Settings
from device_gateway.mqtt import MqttTarget
from dispatcher.audit import service as audit
from dispatcher.calls import config_files, travel
from dispatcher.calls.context import DispatchContext, Outcome
from dispatcher.calls.watchdog import watchdog
from dispatcher.engine import handling
from dispatcher.engine.base import DispatcherStats
from dispatcher.engine.intake_loop import IntakeLoop
from dispatcher.engine.outbox_loop import OutboxLoop
from dispatcher.engine.timer_loop import TimerLoop
from dispatcher.engine.visits_loop import VisitsLoop
from dispatcher.incidents.service import MassOfflineIntake
from dispatcher.notifications.channel_notifier import ChannelNotifier
from dispatcher.notifications.channels import Purpose, load_notifications_config
from dispatcher.notifications.notifiers import Notifier
from dispatcher.orders import breaches as order_breaches
from dispatcher.orders.device_intake import catalogue as order_catalogue

log = structlog.get_logger("carecall.dispatcher")


def pages_routed(notifications_file: Path | None) -> bool:
    """Whether the notifications file sends pages through a channel besides the app."""
    if notifications_file is None:
        return False
    cfg = load_notifications_config(notifications_file)
    return any(name != "app" for name in cfg.routing.get(Purpose.page, []))


def load_context(settings: Settings) -> DispatchContext:
    cfg = config_files.load_dispatch_config(settings.dispatch_file)
    return DispatchContext(
        dispatch_cfg=cfg,
        policies=config_files.load_policies(settings.escalation_file),
        engine=travel.make_engine(cfg.routing),
        area_events=MassOfflineIntake,
        tz=ZoneInfo(settings.timezone),
        join_window_s=cfg.calls.join_window_s,
        notifier_channel=settings.notifier,
        page_notifications=pages_routed(settings.notifications_file),
    )


class Dispatcher(IntakeLoop, TimerLoop, OutboxLoop, VisitsLoop):
    def __init__(
        self,
        *,
        settings: Settings,
        maker: async_sessionmaker[AsyncSession],
        bus: MemoryBus | RedisBus,
        clock: Clock,
        mqtt: MqttTarget | None,
        notifier: Notifier,
        ctx: DispatchContext | None = None,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.bus = bus
        self.clock = clock
        self.mqtt = mqtt
        self.notifier = notifier
        self.ctx = ctx or load_context(settings)
        self.name = f"dispatcher-{settings.instance}"
        if isinstance(notifier, ChannelNotifier):  # one cost budget for every copy (the audit log)
            notifier.share_budget(maker, self.name)
        self.stats = DispatcherStats()
        self._wake_intake = asyncio.Event()
        self._wake_outbox = asyncio.Event()
        self._wake_timers = asyncio.Event()
        self._client = None
        self.on_calls_changed = None
        self.max_handling_attempts = handling.MAX_HANDLING_ATTEMPTS
        self.handling_retry_s = handling.HANDLING_RETRY_S
        self._retry_looked = {}
        self.heartbeats = {}
        self.loops = settings.dispatcher_loop_set

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        loops = self.loops
        tasks = []
        if "intake" in loops:
            tasks += [
                asyncio.create_task(self._loop(self.intake_once, self._wake_intake, 1.0), name="dsp-intake"),
                asyncio.create_task(self._listen("events", self._wake_intake), name="dsp-hint-events"),
            ]
        if "timers" in loops:
            tasks.append(asyncio.create_task(self._timer_loop(), name="dsp-timers"))
            if "intake" not in loops:  # calls opened by an intake copy: a step may be due at once
                tasks.append(
                    asyncio.create_task(self._listen_timers(), name="dsp-hint-timers")
                )
        if "outbox" in loops:
            tasks += [
                asyncio.create_task(self._loop(self.outbox_once, self._wake_outbox, 1.0), name="dsp-outbox"),
                asyncio.create_task(self._listen("outbox", self._wake_outbox), name="dsp-hint-outbox"),
            ]
        if "watchdog" in loops:
            tasks.append(asyncio.create_task(self._loop(self.watchdog_once, None, 30.0), name="dsp-watchdog"))
        if "visits" in loops:
            tasks.append(
                asyncio.create_task(
                    self._loop(self.visits_once, None, self._rules().generate_every_s), name="dsp-visits"
                )
            )
        if "order_levels" in loops:
            tasks.append(
                asyncio.create_task(self._loop(self.order_levels_once, None, 30.0), name="dsp-order-levels")
            )
        if self.mqtt is not None and "outbox" in loops:  # device acks go out from the outbox
            tasks.append(asyncio.create_task(self._mqtt_loop(), name="dsp-mqtt"))
        log.info("dispatcher.started", name=self.name, loops=self.settings.dispatcher_loops)
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.notifier.close()

    async def _listen(self, channel: str, wake: asyncio.Event) -> None:
        async for _ in self.bus.subscribe(channel):
            wake.set()

    async def _listen_timers(self) -> None:
        """An intake copy's hint: timers stored, the first due at ``due``; wake the timer
        loop only if it would sleep past that (a hint without a readable ``due`` wakes it)."""
        async for msg in self.bus.subscribe("timers"):
            try:
                due = datetime.fromisoformat(str(msg["due"]))
            except (KeyError, TypeError, ValueError):
                self._wake_timers.set()
                continue
            self._wake_timers_for(due)

    async def _loop(
        self, fn: Callable[[], Awaitable[int]], wake: asyncio.Event | None, interval_s: float
    ) -> None:
        """Run ``fn`` round after round (at once while it finds work; otherwise after a
        hint or ``interval_s``), recording each completed round as the loop's heartbeat."""
        backoff = handling.Backoff()
        while True:
            try:
                busy = await fn()
                self.heartbeats[fn.__name__.removesuffix("_once")] = time.monotonic()
                backoff.reset()
            except Exception as exc:
                await backoff.failed(fn.__name__, exc)
                continue
            if busy:
                continue  # more may be waiting
            if wake is None:
                await asyncio.sleep(interval_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval_s)
            wake.clear()

    # ------------------------------------------------------------------ watchdog

    async def watchdog_once(self) -> int:
        now = self.clock.now()
        async with self.maker() as session, session.begin():
            await audit.lock_head(session)
            repaired = await watchdog(session, actor=f"{self.name}:watchdog", now=now)
        if repaired:
            self.stats.repairs += len(repaired)
            log.warning("dispatcher.watchdog_repaired", calls=repaired)
            await self._announce(Outcome(calls=set(repaired)))
        return 0

    async def order_levels_once(self) -> int:
        """Service orders' missed levels: recorded and paged (outbox rows) to the provider's
        manager, then the station holding the order (dispatcher/orders/breaches.py), never
        to the emergency ladder."""
        pages = await order_breaches.check_once(
            self.maker,
            now=self.clock.now(),
            channel=self.ctx.notifier_channel,
            settings=order_catalogue().breach_pages,
        )
        if pages:
            self._wake_outbox.set()
        return 0


def default_policy_paths() -> tuple[Path, Path]:
    from config.settings import CONFIG_DIR

    return CONFIG_DIR / "dispatch.yaml", CONFIG_DIR / "escalation.yaml"

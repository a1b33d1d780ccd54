"""The dispatcher process: stored events → calls, due timers → escalation, outbox → people
and devices, and a watchdog over it all.

Four loops, each a short transaction at a time, safe to run in several copies at once:
events are claimed once (event_intake's key), timers and outbox rows with SKIP LOCKED on
PostgreSQL. A bus hint wakes a loop early; a poll interval makes the hint optional.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import structlog
from prometheus_client import Counter as PCounter
from prometheus_client import Histogram
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import Settings
from device_gateway import protocol as p
from device_gateway.metrics import REGISTRY
from device_gateway.service import MqttTarget, mqtt_client
from dispatcher import audit, calls, routing
from dispatcher import escalation as esc
from dispatcher.bus import MemoryBus, RedisBus
from dispatcher.chain import AuditKind
from dispatcher.clock import Clock
from dispatcher.models import Call, EventIntake, Notification, Timer
from dispatcher.notifiers import Message, Notifier, NotifyError

log = structlog.get_logger("carecall.dispatcher")

CALLS_OPENED = PCounter(
    "carecall_dispatcher_events_handled_total",
    "Stored events handled, by decision",
    ["decision"],
    registry=REGISTRY,
)
TIMERS_FIRED = PCounter(
    "carecall_dispatcher_timers_total", "Escalation timers, by result", ["result"], registry=REGISTRY
)
TIMER_LATE = Histogram(
    "carecall_dispatcher_timer_late_seconds",
    "Timer fired-at minus due-at",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
NOTIFY = PCounter(
    "carecall_dispatcher_notifications_total",
    "Outbox deliveries, by channel and result",
    ["channel", "result"],
    registry=REGISTRY,
)

MAX_ATTEMPTS = 8


def load_context(settings: Settings) -> calls.DispatchContext:
    cfg = routing.load_dispatch_config(settings.dispatch_file)
    return calls.DispatchContext(
        dispatch_cfg=cfg,
        policies=esc.load_policies(settings.escalation_file),
        engine=routing.make_engine(cfg.routing),
        tz=ZoneInfo(settings.timezone),
        join_window_s=cfg.calls.join_window_s,
        notifier_channel=settings.notifier,
    )


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


class Dispatcher:
    def __init__(
        self,
        *,
        settings: Settings,
        maker: async_sessionmaker[AsyncSession],
        bus: MemoryBus | RedisBus,
        clock: Clock,
        mqtt: MqttTarget | None,
        notifier: Notifier,
        ctx: calls.DispatchContext | None = None,
    ) -> None:
        self.settings = settings
        self.maker = maker
        self.bus = bus
        self.clock = clock
        self.mqtt = mqtt
        self.notifier = notifier
        self.ctx = ctx or load_context(settings)
        self.name = f"dispatcher-{settings.instance}"
        self.stats = DispatcherStats()
        self._wake_intake = asyncio.Event()
        self._wake_outbox = asyncio.Event()
        self._wake_timers = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self.on_calls_changed: Callable[[set[int]], Awaitable[None]] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(self._loop(self.intake_once, self._wake_intake, 1.0), name="dsp-intake"),
            asyncio.create_task(self._timer_loop(), name="dsp-timers"),
            asyncio.create_task(self._loop(self.outbox_once, self._wake_outbox, 1.0), name="dsp-outbox"),
            asyncio.create_task(self._loop(self.watchdog_once, None, 30.0), name="dsp-watchdog"),
            asyncio.create_task(self._listen("events", self._wake_intake), name="dsp-hint-events"),
            asyncio.create_task(self._listen("outbox", self._wake_outbox), name="dsp-hint-outbox"),
        ]
        if self.mqtt is not None:
            tasks.append(asyncio.create_task(self._mqtt_loop(), name="dsp-mqtt"))
        log.info("dispatcher.started", name=self.name)
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

    async def _loop(
        self, fn: Callable[[], Awaitable[int]], wake: asyncio.Event | None, interval_s: float
    ) -> None:
        backoff = 0.2
        while True:
            try:
                busy = await fn()
                backoff = 0.2
            except (OperationalError, DBAPIError, OSError) as exc:
                log.warning(
                    "dispatcher.db_unavailable", task=fn.__name__, error=str(exc)[:200], retry_s=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception:
                log.exception("dispatcher.loop_failed", task=fn.__name__)
                await asyncio.sleep(1.0)
                continue
            if busy:
                continue  # more may be waiting
            if wake is None:
                await asyncio.sleep(interval_s)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval_s)
            wake.clear()

    async def _timer_loop(self) -> None:
        """Fire due timers; between rounds sleep until the next one is due (at most
        ``timer_poll_s``, which also covers timers other copies scheduled), or until this
        copy's intake opened calls, whose first step is due at once."""
        backoff = 0.2
        poll = self.settings.timer_poll_s
        while True:
            try:
                if await self.timers_once():
                    backoff = 0.2
                    continue  # more may be due
                wait = await self._until_next_timer(poll)
                backoff = 0.2
            except (OperationalError, DBAPIError, OSError) as exc:
                log.warning(
                    "dispatcher.db_unavailable", task="timers_once", error=str(exc)[:200], retry_s=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception:
                log.exception("dispatcher.loop_failed", task="timers_once")
                await asyncio.sleep(1.0)
                continue
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_timers.wait(), wait)
            self._wake_timers.clear()

    async def _until_next_timer(self, cap_s: float) -> float:
        """Seconds until the earliest pending timer is due, capped; 0 when one is due."""
        async with self.maker() as session:
            due = await session.scalar(select(func.min(Timer.due_at)).where(Timer.status == "pending"))
        if due is None:
            return cap_s
        if due.tzinfo is None:
            due = due.replace(tzinfo=UTC)
        return max(0.0, min(cap_s, self.clock.real_seconds((due - self.clock.now()).total_seconds())))

    async def _mqtt_loop(self) -> None:
        assert self.mqtt is not None
        backoff = 0.2
        while True:
            try:
                async with mqtt_client(self.mqtt, f"carecall-{self.name}", clean_session=True) as client:
                    self._client = client
                    backoff = 0.2
                    self._wake_outbox.set()
                    await asyncio.Future()  # hold the connection until it fails or we stop
            except aiomqtt.MqttError as exc:
                log.warning("dispatcher.mqtt_lost", error=str(exc), retry_s=backoff)
            finally:
                self._client = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _announce(self, out: calls.Outcome, *, opened: bool = False) -> None:
        if opened:
            self._wake_timers.set()  # a new call's first step (alert the station) is due now
        if out.calls:
            await self.bus.publish("calls", {"ids": sorted(out.calls), "by": self.name})
            if self.on_calls_changed is not None:
                await self.on_calls_changed(out.calls)
        if out.device_notices or out.notifications:
            self._wake_outbox.set()

    # ------------------------------------------------------------------ intake

    async def intake_once(self, limit: int = 25) -> int:
        now = self.clock.now()
        out = calls.Outcome()
        try:
            async with self.maker() as session, session.begin():
                # audit rows are chained at commit: the chain lock is held for the commit
                # only, not while the batch is routed (see audit.defer)
                audit.defer(session)
                events = await calls.claim_events(session, limit)
                if events:
                    # set-based reads: registry rows, then the homes' open calls (locked)
                    await calls.prefetch_registry(session, events)
                    await calls.station_nodes(session)
                    await calls.prefetch_calls(session, events, now)
                # One flush per batch, not one per query: the rows of a batch (calls'
                # timers, audit rows, intake marks) go to the database together. A call
                # itself is flushed when opened (open_call needs its id), so a later event
                # of the same home in the batch still finds it and joins it.
                with session.no_autoflush:
                    for ev in events:
                        o = await calls.handle_event(session, ev, self.ctx, now=now, actor=self.name)
                        await calls.queue_device_notices(session, o.device_notices, now)
                        out.merge(o)
                # the batch's rows now, before the commit takes the chain lock
                await session.flush()
        except IntegrityError:
            # another copy handled one of these first (SQLite has no SKIP LOCKED): retry
            return 1
        except (OperationalError, DBAPIError):
            raise
        except Exception:
            log.exception("dispatcher.intake_batch_failed")
            return await self._intake_one_by_one(limit)
        self.stats.events += len(events)
        CALLS_OPENED.labels("handled").inc(len(events))
        await self._announce(out, opened=bool(events))
        return len(events)

    async def _intake_one_by_one(self, limit: int) -> int:
        """A poison event must not block the queue: handle singly, park failures as 'error'."""
        now = self.clock.now()
        async with self.maker() as session:
            events = await calls.claim_events(session, limit)
        for ev in events:
            out = calls.Outcome()
            try:
                async with self.maker() as session, session.begin():
                    audit.defer(session)
                    out = await calls.handle_event(session, ev, self.ctx, now=now, actor=self.name)
                    await calls.queue_device_notices(session, out.device_notices, now)
            except IntegrityError:
                continue
            except Exception as exc:
                log.exception("dispatcher.event_failed", event_pk=ev.id)
                async with self.maker() as session, session.begin():
                    audit.defer(session)
                    session.add(
                        EventIntake(
                            event_pk=ev.id,
                            decision="error",
                            call_id=None,
                            handled_at=now,
                            handled_by=self.name,
                        )
                    )
                    await audit.append(
                        session,
                        kind=AuditKind.note.value,
                        at=now,
                        actor=self.name,
                        call_id=None,
                        detail={
                            "error": f"event {ev.id} could not be handled: {type(exc).__name__}: {exc}"[:500]
                        },
                    )
                CALLS_OPENED.labels("error").inc()
                continue
            await self._announce(out)
        return 0

    # ------------------------------------------------------------------ timers

    async def timers_once(self, limit: int = 50) -> int:
        now = self.clock.now()
        out = calls.Outcome()
        fired = 0
        async with self.maker() as session, session.begin():
            audit.defer(session)  # timer rows and calls locked first, the chain at commit
            due = await calls.claim_due_timers(session, now, limit)
            taken: tuple[set[int], dict[int, Call]] = (set(), {})
            if due:
                taken = await calls.take_due_timers(session, due, now=now, worker=self.name)
            for timer in due:
                o = await calls.fire_timer(
                    session, timer, now=now, worker=self.name, ctx=self.ctx, taken=taken
                )
                await calls.queue_device_notices(session, o.device_notices, now)
                out.merge(o)
                late = (now - timer.due_at).total_seconds()
                fired += 1
                TIMER_LATE.observe(max(late, 0.0))
                if len(self.stats.timer_late_ms) < 100_000:
                    self.stats.timer_late_ms.append(late * 1000)
            await session.flush()  # before the commit takes the chain lock
        self.stats.timers_fired += fired
        if fired:
            TIMERS_FIRED.labels("handled").inc(fired)
            await self._announce(out)
        return fired

    # ------------------------------------------------------------------ outbox

    async def outbox_once(self, limit: int = 100) -> int:
        """Deliver due notifications. The sends happen before the audit chain's lock is
        taken (the rows are ours meanwhile: SKIP LOCKED), so a slow webhook never holds
        up intake, timers or another copy; the results are chained at commit."""
        now = self.clock.now()
        async with self.maker() as session, session.begin():
            audit.defer(session)  # chained at commit, after the sends
            stmt = (
                select(Notification)
                .where(Notification.status == "pending", Notification.next_attempt_at <= now)
                .order_by(Notification.id)
                .limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = list((await session.scalars(stmt)).all())
            acks = [n for n in rows if n.channel == "mqtt"]
            if acks:
                await self._device_acks(session, acks, now)
            others = [n for n in rows if n.channel != "mqtt"]
            if others:
                results = await asyncio.gather(*(self._send(n) for n in others))
                for n, result in zip(others, results, strict=True):
                    await self._record_delivery(session, n, result, now)
        return len(rows)

    async def _send(self, n: Notification) -> tuple[str | None, Exception | None, float]:
        """(receipt, error, ms) of one delivery attempt; a NotifyError or a timeout is
        returned, not raised."""
        msg = Message(
            notification_id=n.id, call_id=n.call_id, purpose=n.purpose, target=n.target, body=n.body
        )
        t0 = time.monotonic()
        try:
            receipt = await asyncio.wait_for(self.notifier.send(msg), 10)
        except (NotifyError, TimeoutError) as exc:
            return None, exc, (time.monotonic() - t0) * 1000
        return receipt, None, (time.monotonic() - t0) * 1000

    async def _device_acks(self, session: AsyncSession, rows: list[Notification], now: datetime) -> None:
        """Publish device acks concurrently (one PUBACK wait for the batch, not per ack)."""
        client = self._client
        ids = [n.id for n in rows]
        if client is None:
            if self.mqtt is None:  # no broker configured (API-only tests): nothing can send it
                values: dict[str, object] = {"status": "failed", "last_error": "no MQTT broker configured"}
            else:
                values = {"next_attempt_at": now + timedelta(seconds=1)}
            await session.execute(update(Notification).where(Notification.id.in_(ids)).values(**values))
            return

        async def publish(n: Notification) -> None:
            body = {
                "event_id": n.body.get("event_id", ""),
                "state": n.body.get("state"),
                "ts": self.clock.now_ms(),
            }
            topic = p.topic_for(n.target.removeprefix("device:"), p.Channel.ack)
            await client.publish(topic, json.dumps(body, separators=(",", ":")).encode(), qos=1, timeout=5)

        results = await asyncio.gather(*(publish(n) for n in rows), return_exceptions=True)
        ok = [n.id for n, r in zip(rows, results, strict=True) if r is None]
        bad = [n.id for n, r in zip(rows, results, strict=True) if r is not None]
        if ok:
            await session.execute(
                update(Notification).where(Notification.id.in_(ok)).values(status="sent", attempts=1)
            )
            self.stats.device_acks += len(ok)
            NOTIFY.labels("mqtt", "sent").inc(len(ok))
        if bad:
            await session.execute(
                update(Notification)
                .where(Notification.id.in_(bad))
                .values(attempts=Notification.attempts + 1, next_attempt_at=now + timedelta(seconds=2))
            )
            NOTIFY.labels("mqtt", "retry").inc(len(bad))

    async def _record_delivery(
        self,
        session: AsyncSession,
        n: Notification,
        result: tuple[str | None, Exception | None, float],
        now: datetime,
    ) -> None:
        receipt, exc, ms = result
        if exc is not None:
            attempts = n.attempts + 1
            final = attempts >= MAX_ATTEMPTS
            await session.execute(
                update(Notification)
                .where(Notification.id == n.id)
                .values(
                    attempts=attempts,
                    status="failed" if final else "pending",
                    next_attempt_at=now + timedelta(seconds=min(2**attempts, 300)),
                    last_error=str(exc)[:500] or type(exc).__name__,
                )
            )
            await audit.append(
                session,
                kind=AuditKind.notification_failed.value,
                at=now,
                actor=self.name,
                call_id=n.call_id,
                detail={
                    "notification_id": n.id,
                    "purpose": n.purpose,
                    "target": n.target,
                    "channel": n.channel,
                    "attempt": attempts,
                    "final": final,
                    "error": str(exc)[:300],
                },
            )
            self.stats.notifications_failed += 1
            NOTIFY.labels(n.channel, "failed").inc()
            return
        await session.execute(
            update(Notification).where(Notification.id == n.id).values(status="sent", attempts=n.attempts + 1)
        )
        await audit.append(
            session,
            kind=AuditKind.notification_sent.value,
            at=now,
            actor=self.name,
            call_id=n.call_id,
            detail={
                "notification_id": n.id,
                "purpose": n.purpose,
                "target": n.target,
                "channel": n.channel,
                "receipt": receipt,
                "ms": round(ms, 1),
            },
        )
        self.stats.notifications_sent += 1
        NOTIFY.labels(n.channel, "sent").inc()

    # ------------------------------------------------------------------ watchdog

    async def watchdog_once(self) -> int:
        now = self.clock.now()
        async with self.maker() as session, session.begin():
            await audit.lock_head(session)
            repaired = await calls.watchdog(session, now=now, actor=f"{self.name}:watchdog")
        if repaired:
            self.stats.repairs += len(repaired)
            log.warning("dispatcher.watchdog_repaired", calls=repaired)
            await self._announce(calls.Outcome(calls=set(repaired)))
        return 0


def default_policy_paths() -> tuple[Path, Path]:
    from config.settings import CONFIG_DIR

    return CONFIG_DIR / "dispatch.yaml", CONFIG_DIR / "escalation.yaml"

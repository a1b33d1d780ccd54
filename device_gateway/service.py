"""The device gateway: MQTT in, stored events and acks out.

The way of one alarm: a device publishes on ``{root}/events`` → the intake
(device_gateway/intake.py) parses and checks it → the event writer
(device_gateway/writer.py) commits a batch (ON CONFLICT DO NOTHING on (device, id)) →
only then is ``received`` acked to the device (device_gateway/downlink.py) → a bus hint
tells the dispatcher. Telemetry only updates per-device state in memory
(device_gateway/telemetry.py), flushed in batches (device_gateway/state_writer.py), and
feeds the rules that may raise derived events through the same writer. Supervision turns
silence and wills into ``offline`` events, and the return into ``online``.

This module wires those parts into one process task: the broker connections and their
sessions, the periodic work, and the reload of devices announced on the bus
(device_gateway/changes.py).

Several copies may run at once: they share the broker subscription, dedup on the
database's unique key, and flip liveness with conditional UPDATEs so each transition
raises exactly one event. A copy serves one lane (device_gateway/lanes.py): ``all``, or
only the alarms (``events``) or only the readings (``readings``), so that production runs
alarms and readings in processes of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

import aiomqtt
import structlog
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core import metrics as m
from carecall.core.bus import MemoryBus, RedisBus
from carecall.core.cancel import raise_if_cancelling
from carecall.core.clock import Clock
from config.settings import Settings
from device_gateway import rules as rules_mod
from device_gateway.changes import DEVICES_CHANNEL, announced_by, announced_ids
from device_gateway.directory import DeviceDirectory
from device_gateway.downlink import Downlink
from device_gateway.intake import Intake
from device_gateway.lanes import Connection, Lane, lane_group, lane_name, lane_plan
from device_gateway.limits import RejectLimiter
from device_gateway.mqtt import MqttTarget, UplinkQueue, mqtt_client
from device_gateway.outages import OutageRecorder
from device_gateway.readings_queue import ShedCounts, readings_queue
from device_gateway.state_writer import StateWriter
from device_gateway.stats import GatewayStats
from device_gateway.store import EventRow, ResidentLookup
from device_gateway.telemetry import TelemetryRules
from device_gateway.writer import EventWriter

log = structlog.get_logger("carecall.gateway")

Bus = MemoryBus | RedisBus

YIELD_EVERY = 32  # messages handled before the intake lets other tasks run
SHED_REPORT_S = 10.0  # how often shed readings are logged (when there were any)


def yield_after(handled: int, alarm_work: bool, took_event: bool) -> bool:
    """Whether the intake lets other tasks run after its ``handled``-th message.

    A queued message is taken without suspending, so a backlog of readings would be
    drained in one go while the event writer's commit and the acks wait: every
    ``YIELD_EVERY`` messages, let them run. While an event is being stored, after every
    message that was not itself an event for the writer: each step of the commit waits
    for one turn of the loop, and 32 junk messages a turn made an alarm wait 100 ms
    behind a flood. Events are taken up to ``YIELD_EVERY`` a turn: they go into the
    writer's next batch, and one turn each held a storm's intake to the loop's turn rate
    (a few hundred a second in the one-process target, issue 15)."""
    return handled % YIELD_EVERY == 0 or (alarm_work and not took_event)


class Gateway:
    def __init__(
        self,
        *,
        settings: Settings,
        maker: async_sessionmaker[AsyncSession],
        bus: Bus,
        clock: Clock,
        mqtt: MqttTarget,
        shared_group: str | None,
        residents: ResidentLookup,
        telemetry_qos: int = 0,
        lane: Lane = Lane.all,
    ) -> None:
        if telemetry_qos not in (0, 1):
            raise ValueError(f"telemetry_qos must be 0 or 1, got {telemetry_qos}")
        self.settings = settings
        self.telemetry_qos = telemetry_qos
        self.lane = lane
        self.maker = maker
        self.bus = bus
        self.clock = clock
        self.mqtt = mqtt
        self.shared_group = lane_group(lane, shared_group)
        self.name = lane_name(settings.instance, lane)
        self.directory = DeviceDirectory(maker, residents)
        self.rejects = m.RejectCounter()
        self.limiter = RejectLimiter(now=time.monotonic())
        self.stats = GatewayStats()
        self.rules = rules_mod.load_rules(settings.rules_file)
        self.tz = ZoneInfo(settings.timezone)
        self.downlink = Downlink(clock, self.stats)
        self.writer = EventWriter(
            maker=maker,
            bus=bus,
            name=self.name,
            batch_max=settings.event_batch_max,
            downlink=self.downlink,
            stats=self.stats,
            rejects=self.rejects,
            reject=lambda *args: self.intake.reject(*args),
        )
        self.telemetry = TelemetryRules(
            rules=self.rules, tz=self.tz, name=self.name, stats=self.stats, enqueue=self.writer.enqueue
        )
        self.intake = Intake(
            settings=settings,
            clock=clock,
            name=self.name,
            tz=self.tz,
            telemetry_qos=telemetry_qos,
            lane=lane,
            directory=self.directory,
            downlink=self.downlink,
            telemetry=self.telemetry,
            enqueue=self.writer.enqueue,
            stats=self.stats,
            rejects=self.rejects,
            limiter=self.limiter,
        )
        self.state = StateWriter(
            maker=maker,
            clock=clock,
            name=self.name,
            offline_after_intervals=settings.offline_after_intervals,
            directory=self.directory,
            intake=self.intake,
            writer=self.writer,
        )
        self.plan = lane_plan(
            lane, telemetry_qos=telemetry_qos, shared_group=shared_group, by_name=mqtt.named_channels
        )
        self.shed = ShedCounts()
        self._shed_reported = (0, 0)
        self._readings_queue = readings_queue(
            shed_above=settings.readings_shed_above,
            drop_above=settings.readings_drop_above,
            max_bytes=settings.max_payload_bytes,
            counts=self.shed,
        )
        self._up: dict[str, bool] = {}
        self.connected = asyncio.Event()
        # when this copy lost and regained the broker: its wills are one broker restart
        self.outages = OutageRecorder(maker, self.name, clock)

    @property
    def on_stored(self) -> Callable[[list[EventRow]], Awaitable[None]] | None:
        """Called with the rows of each commit that were new (the demo's in-process hook)."""
        return self.writer.on_stored

    @on_stored.setter
    def on_stored(self, fn: Callable[[list[EventRow]], Awaitable[None]] | None) -> None:
        self.writer.on_stored = fn

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        await self.directory.refresh()
        m.LANE.labels(self.lane.value).set(1)
        workers = [
            asyncio.create_task(self.writer.run(), name="gw-event-writer"),
            asyncio.create_task(
                self._periodic(self.settings.state_flush_interval_s, self._flush), name="gw-flush"
            ),
            asyncio.create_task(
                self._periodic(60.0, self.directory.refresh, simulated=False), name="gw-directory"
            ),
            asyncio.create_task(self._device_changes(), name="gw-device-changes"),
        ]
        if self.lane is not Lane.readings:  # silence → offline: alarm work
            workers.append(
                asyncio.create_task(
                    self._periodic(self.settings.supervision_interval_s, self._sweep), name="gw-sweep"
                )
            )
        if self.lane is not Lane.events:  # the rules' state comes from readings
            workers += [
                asyncio.create_task(self._periodic(60.0, self._rules_tick), name="gw-rules-tick"),
                asyncio.create_task(
                    self._periodic(SHED_REPORT_S, self._report_shed, simulated=False), name="gw-shed"
                ),
            ]
        mqtt_task = asyncio.create_task(self._mqtt_loop(), name="gw-mqtt")
        try:
            await stop.wait()
        finally:
            mqtt_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mqtt_task
            # drain what was accepted before stopping, so nothing received is dropped
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain(), timeout=10)
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _drain(self) -> None:
        await self.writer.drained()
        await self._flush()

    async def _periodic(
        self, interval_s: float, fn: Callable[[], Awaitable[None]], *, simulated: bool = True
    ) -> None:
        while True:
            if simulated:
                await self.clock.sleep(interval_s)
            else:
                await asyncio.sleep(interval_s)
            try:
                await fn()
            except (OperationalError, DBAPIError, OSError) as exc:
                m.DB_ERRORS.inc()
                log.warning(
                    "gateway.periodic_db_error",
                    task=getattr(fn, "__name__", "?"),
                    error=str(exc)[:200],
                )
            except Exception:
                log.exception("gateway.periodic_failed", task=getattr(fn, "__name__", "?"))

    async def _flush(self) -> None:
        """Write device state and rejections; raise online/offline for wills and returns."""
        await self.state.flush()

    async def _sweep(self) -> None:
        await self.state.sweep()

    async def _report_shed(self) -> None:
        """The readings merged or dropped since the last report, in one log line."""
        m.QUEUE_DEPTH.labels("readings").set(self.shed.queued)
        before = self._shed_reported
        now = (self.shed.merged, self.shed.dropped)
        if now == before:
            return
        self._shed_reported = now
        log.warning(
            "gateway.readings_shed",
            merged=now[0] - before[0],
            dropped=now[1] - before[1],
            merged_total=now[0],
            dropped_total=now[1],
            queued=self.shed.queued,
            interval_s=SHED_REPORT_S,
        )

    async def _rules_tick(self) -> None:
        """Time-based rules (not back in bed, no movement) must fire even when the next
        reading is late, so every device with rule state is re-evaluated with no readings."""
        now = self.clock.now()
        for device_id in self.telemetry.devices():
            info = self.directory.cached(device_id)
            if info is not None and info.enabled:
                self.telemetry.apply(info, {}, now)

    # ------------------------------------------------------------------ device changes

    async def _device_changes(self) -> None:
        """Reload the devices announced on the bus channel ``devices`` (``{"ids": […],
        "by": actor}``, published after the registry change commits), so a disabled or
        deleted device is refused from its next message on, not a minute later."""
        while True:
            try:
                async for message in self.bus.subscribe(DEVICES_CHANNEL):
                    ids = announced_ids(message)
                    if not ids:
                        log.warning("gateway.bad_devices_message")
                        continue
                    await self._reload_devices(ids, (announced_by(message) or "")[:64])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway.device_changes_failed")
                await asyncio.sleep(1.0)

    async def _reload_devices(self, ids: list[str], by: str) -> None:
        try:
            changed = await self.directory.reload(ids)
        except (OperationalError, DBAPIError, OSError) as exc:
            m.DB_ERRORS.inc()  # the minute's full refresh catches up
            log.warning("gateway.device_reload_failed", count=len(ids), error=str(exc)[:200])
            return
        for device_id in ids:
            self._forget_device(device_id)
        m.DEVICE_RELOADS.inc(len(ids))
        log.info("gateway.devices_reloaded", count=len(ids), changed=len(changed), by=by)

    def _forget_device(self, device_id: str) -> None:
        """Per-device state that must not outlive a registry change."""
        self.limiter.forget(device_id)  # a re-enabled or re-keyed device starts afresh
        self.telemetry.forget(device_id, self.directory.cached(device_id))

    # ------------------------------------------------------------------ broker sessions

    @property
    def subscriptions(self) -> list[tuple[str, int]]:
        """Every (filter, QoS) this copy subscribes to, over all its connections."""
        return [s for c in self.plan for s in c.subscriptions]

    async def _mqtt_loop(self) -> None:
        self._up = dict.fromkeys((c.role for c in self.plan), False)
        await asyncio.gather(*(self._mqtt_connection(c) for c in self.plan))

    def _set_up(self, conn: Connection, up: bool) -> None:
        self._up[conn.role] = up
        if conn.primary:
            m.MQTT_CONNECTED.set(1 if up else 0)
        if all(self._up.values()):
            self.connected.set()
        else:
            self.connected.clear()

    async def _mqtt_connection(self, conn: Connection) -> None:
        """One broker connection, reconnected with backoff, always with a clean session.

        A persistent session outlives its process: a copy stopped for good (SIGTERM,
        SIGKILL, a scaled-down deployment) kept its place in the ``$share`` group, and
        the broker went on queueing every other message of every device for a client
        that never returns (half of all SOS with two copies; issue 10). With a clean
        session the broker forgets the copy as soon as its connection ends (at once on a
        closed socket, after 1.5 keepalives on a silent one) and the copies left take
        everything. Nothing needed is lost meanwhile: devices resend every event until it
        is acked ``received`` (docs/protocol.md), so an event queued for nobody while no
        copy is connected comes again; a will or status that fired meanwhile is retained
        and replayed on resubscribe (``Intake._on_status`` takes a retained ``offline`` as the
        will); telemetry is the latest state and the next reading replaces it. MQTT 5
        session expiry would not do better: any expiry long enough to bridge a restart
        is as long a stall for the messages routed to a copy that is gone.
        """
        backoff = 0.2
        first = True
        role, main = conn.role, conn.primary
        while True:
            try:
                client = mqtt_client(
                    self.mqtt,
                    f"carecall-{self.name}" if main else f"carecall-{self.name}-{role}",
                    # never a persistent session: see _mqtt_connection's docstring
                    clean_session=True,
                    keepalive=self.settings.mqtt_keepalive_s,
                    # alarms first on the main connection; readings merged and shed under
                    # overload on theirs (device_gateway/shedding.py)
                    queue_type=UplinkQueue if role == "main" else self._readings_queue,
                )
                async with client:
                    if main:
                        self.downlink.client = client
                    for topic, qos in conn.subscriptions:
                        await client.subscribe(topic, qos=qos)
                    self._set_up(conn, True)
                    if main:
                        self.outages.back()  # device_gateway.outages
                    if not first:
                        m.RECONNECTS.inc()
                    first = False
                    backoff = 0.2
                    log.info(
                        "gateway.connected",
                        connection=role,
                        lane=self.lane.value,
                        broker=f"{self.mqtt.host}:{self.mqtt.port}",
                        shared=self.shared_group,
                    )
                    handled = 0
                    async for message in client.messages:
                        queued = self.writer.enqueued
                        try:
                            await self.intake.on_message(message, role)
                        except Exception:  # never let one message stop the gateway
                            log.exception("gateway.message_failed", topic=str(message.topic))
                        handled += 1
                        if yield_after(handled, self.writer.alarm_work, self.writer.enqueued != queued):
                            await asyncio.sleep(0)
            except aiomqtt.MqttError as exc:
                if main and self._up.get(role):
                    self.outages.lost()  # device_gateway.outages: the broker went away
                log.warning(
                    "gateway.disconnected", connection=role, error=str(exc), retry_s=round(backoff, 2)
                )
            finally:
                if main:
                    self.downlink.client = None
                self._set_up(conn, False)
            raise_if_cancelling()  # aiomqtt may have swallowed a stop while (dis)connecting
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

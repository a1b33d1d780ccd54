"""The device gateway: MQTT in, stored events and acks out.

The way of one alarm: a device publishes on ``{root}/events`` → ``_on_event`` parses and
checks it → the event writer commits a batch (ON CONFLICT DO NOTHING on (device, id)) →
only then is ``received`` acked to the device → a bus hint tells the dispatcher.
Telemetry only updates per-device state in memory, flushed in batches, and feeds the rules
that may raise derived events through the same writer. Supervision turns silence and wills
into ``offline`` events, and the return into ``online``.

Several copies may run at once: they share the broker subscription, dedup on the
database's unique key, and flip liveness with conditional UPDATEs so each transition
raises exactly one event.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import aiomqtt
import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import Settings
from device_gateway import metrics as m
from device_gateway import protocol as p
from device_gateway import rules as rules_mod
from device_gateway.store import (
    DeviceInfo,
    EventRow,
    PendingState,
    RejectRow,
    flush_states,
    insert_events,
    insert_rejects,
    load_devices,
    mark_offline,
    sweep_overdue,
)
from dispatcher.bus import MemoryBus, RedisBus
from dispatcher.clock import Clock

log = structlog.get_logger("carecall.gateway")

Bus = MemoryBus | RedisBus

YIELD_EVERY = 32  # messages handled before the intake lets other tasks run


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> MqttTarget:
        parts = urlsplit(url)
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


class UplinkQueue(asyncio.Queue[aiomqtt.Message]):
    """Incoming messages, alarms first.

    One broker connection carries thousands of telemetry readings a second and, now and
    then, an SOS. In arrival order the SOS would wait behind every reading queued before
    it; here events and live status jump the queue (FIFO within each class), so the alarm
    path's latency does not grow with the telemetry backlog."""

    def _init(self, maxsize: int) -> None:
        self._urgent: collections.deque[aiomqtt.Message] = collections.deque()
        self._bulk: collections.deque[aiomqtt.Message] = collections.deque()

    def qsize(self) -> int:
        return len(self._urgent) + len(self._bulk)

    def empty(self) -> bool:
        return not (self._urgent or self._bulk)

    def _put(self, item: aiomqtt.Message) -> None:
        # Retained messages are old news replayed on subscribe (on a shared broker, the
        # retained status of every device that ever connected, known to us or not, each
        # an unknown-device lookup): they must not hold up a live alarm either.
        bulk = item.retain or item.topic.value.endswith("/telemetry")
        (self._bulk if bulk else self._urgent).append(item)

    def _get(self) -> aiomqtt.Message:
        return self._urgent.popleft() if self._urgent else self._bulk.popleft()


def mqtt_client(
    target: MqttTarget,
    identifier: str,
    *,
    clean_session: bool,
    keepalive: int = 30,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
) -> aiomqtt.Client:
    """A platform MQTT client: TCP_NODELAY (no Nagle tail spikes), deep queues."""
    client = aiomqtt.Client(
        target.host,
        target.port,
        username=target.username,
        password=target.password,
        identifier=identifier,
        clean_session=clean_session,
        protocol=aiomqtt.ProtocolVersion.V311,
        keepalive=keepalive,
        timeout=10,
        max_inflight_messages=200,
        max_queued_outgoing_messages=100_000,
        tls_context=ssl.create_default_context() if target.tls else None,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        queue_type=queue_type,
    )
    client.pending_calls_threshold = 100_000
    return client


@dataclass(slots=True)
class GatewayStats:
    messages: int = 0
    events_stored: int = 0
    events_duplicate: int = 0
    derived: int = 0
    acks: int = 0
    ack_latencies_ms: list[float] = field(default_factory=list)


class DeviceDirectory:
    """Registry facts per device, cached; a miss asks the database (negative results
    are cached briefly so an unknown device flooding us costs one query a minute)."""

    def __init__(self, maker: async_sessionmaker[AsyncSession], negative_ttl_s: float = 60.0) -> None:
        self._maker = maker
        self._known: dict[str, DeviceInfo] = {}
        self._unknown: dict[str, float] = {}
        self._ttl = negative_ttl_s

    async def refresh(self) -> None:
        async with self._maker() as session:
            infos = await load_devices(session)
        self._known = {d.id: d for d in infos}
        self._unknown.clear()
        m.DEVICES.labels("registered").set(len(self._known))

    def cached(self, device_id: str) -> DeviceInfo | None:
        return self._known.get(device_id)

    async def get(self, device_id: str) -> DeviceInfo | None:
        info = self._known.get(device_id)
        if info is not None:
            return info
        miss = self._unknown.get(device_id)
        if miss is not None and time.monotonic() - miss < self._ttl:
            return None
        async with self._maker() as session:
            found = await load_devices(session, [device_id])
        if found:
            self._known[device_id] = found[0]
            return found[0]
        if len(self._unknown) > 100_000:
            self._unknown.clear()
        self._unknown[device_id] = time.monotonic()
        return None

    def heartbeat(self, device_id: str) -> int:
        info = self._known.get(device_id)
        return info.heartbeat_s if info else 60


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
        telemetry_qos: int = 0,
    ) -> None:
        if telemetry_qos not in (0, 1):
            raise ValueError(f"telemetry_qos must be 0 or 1, got {telemetry_qos}")
        self.settings = settings
        self.telemetry_qos = telemetry_qos
        self.maker = maker
        self.bus = bus
        self.clock = clock
        self.mqtt = mqtt
        self.shared_group = shared_group or None
        self.name = f"gateway-{settings.instance}"
        self.directory = DeviceDirectory(maker)
        self.rejects = m.RejectCounter()
        self.stats = GatewayStats()
        self.rules = rules_mod.load_rules(settings.rules_file)
        self.tz = ZoneInfo(settings.timezone)
        self._events: asyncio.Queue[EventRow] = asyncio.Queue(maxsize=100_000)
        self._reject_buf: list[RejectRow] = []
        self._pending: dict[str, PendingState] = {}
        self._rule_state: dict[str, rules_mod.RuleState] = {}
        self._trend_last: dict[str, int] = {}
        self._client: aiomqtt.Client | None = None
        self._up: dict[str, bool] = {}
        self._ack_tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        # Prometheus children resolved once: .labels() takes a lock and a dict lookup per call
        self._channel_counter = {ch: m.MESSAGES.labels(ch.value) for ch in p.Channel}
        self._ranges: dict[str, tuple[DeviceInfo, rules_mod.VitalRanges]] = {}
        self.on_stored: Callable[[list[EventRow]], Awaitable[None]] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        await self.directory.refresh()
        workers = [
            asyncio.create_task(self._event_writer(), name="gw-event-writer"),
            asyncio.create_task(
                self._periodic(self.settings.state_flush_interval_s, self._flush), name="gw-flush"
            ),
            asyncio.create_task(
                self._periodic(self.settings.supervision_interval_s, self._sweep), name="gw-sweep"
            ),
            asyncio.create_task(
                self._periodic(60.0, self.directory.refresh, simulated=False), name="gw-directory"
            ),
            asyncio.create_task(self._periodic(60.0, self._rules_tick), name="gw-rules-tick"),
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
        # the writer empties the queue by itself; poll until it has (stop path only)
        while not self._events.empty():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        await self._flush()

    def _subscriptions(self) -> list[tuple[str, int]]:
        """(filter, QoS) pairs that never overlap (an overlap delivers one message twice on
        some brokers, and MQTT makes the broker use the highest QoS of the overlap).

        Telemetry is disposable state (the latest readings; the next one replaces it), so
        by default it is taken at QoS 0: no PUBACK per reading, which was the largest cost
        of the gateway. Events and status stay QoS 1 (at-least-once, deduplicated on
        (device, id) when stored). The QoS 0 filter is every five-level topic, on a
        connection of its own (``_connections``): it carries the readings, and any
        unknown channel (``{root}/bogus``) that a misconfigured broker let through, which
        PROTOCOL.md has the gateway count; the events and status it also sees there are
        left to the QoS 1 connection. Deeper or shallower topics are received and counted
        as ``bad_topic`` too. With ``telemetry_qos=1`` one connection takes every
        five-level topic at QoS 1, as before.
        """
        root = p.TOPIC_PREFIX
        if self.telemetry_qos == 1:
            base = [(f"{root}/+/+", 1)]
        else:
            base = [
                (f"{root}/+/{p.Channel.events.value}", 1),
                (f"{root}/+/{p.Channel.status.value}", 1),
                (f"{root}/+/+", 0),
            ]
        base += [(f"{root}/+/+/+/#", 1), (f"{root}/+", 1)]  # anything deeper, anything shallower
        if self.shared_group:
            return [(f"$share/{self.shared_group}/{t}", q) for t, q in base]
        return base

    def _connections(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """(role, subscriptions) of each broker connection.

        With telemetry at QoS 0 it has a connection of its own: QoS 0 has no flow
        control, so when the gateway falls behind, the backlog of readings waits in that
        connection's socket and the broker's buffer, not in front of an alarm. Events and
        status arrive on the other connection, whose socket the event loop serves every
        turn, and the UplinkQueue puts them first. (On one shared connection an SOS sat
        behind seconds of queued readings at 5,000 readings/s.)"""
        subs = self._subscriptions()
        telemetry = [t for t in subs if t[1] == 0]
        main = [t for t in subs if t not in telemetry]
        return [("main", main)] + ([("telemetry", telemetry)] if telemetry else [])

    async def _mqtt_loop(self) -> None:
        roles = self._connections()
        self._up = dict.fromkeys((r for r, _ in roles), False)
        await asyncio.gather(*(self._mqtt_connection(role, subs) for role, subs in roles))

    def _set_up(self, role: str, up: bool) -> None:
        self._up[role] = up
        if role == "main":
            m.MQTT_CONNECTED.set(1 if up else 0)
        if all(self._up.values()):
            self.connected.set()
        else:
            self.connected.clear()

    async def _mqtt_connection(self, role: str, subscriptions: list[tuple[str, int]]) -> None:
        backoff = 0.2
        first = True
        main = role == "main"
        while True:
            try:
                client = mqtt_client(
                    self.mqtt,
                    f"carecall-{self.name}" if main else f"carecall-{self.name}-{role}",
                    # QoS 0 readings are not kept for an absent client: nothing to resume
                    clean_session=not main,
                    keepalive=self.settings.mqtt_keepalive_s,
                    queue_type=UplinkQueue if main else None,
                )
                async with client:
                    if main:
                        self._client = client
                    for topic, qos in subscriptions:
                        await client.subscribe(topic, qos=qos)
                    self._set_up(role, True)
                    if not first:
                        m.RECONNECTS.inc()
                    first = False
                    backoff = 0.2
                    log.info(
                        "gateway.connected",
                        connection=role,
                        broker=f"{self.mqtt.host}:{self.mqtt.port}",
                        shared=self.shared_group,
                    )
                    handled = 0
                    async for message in client.messages:
                        try:
                            await self._on_message(message, role)
                        except Exception:  # never let one message stop the gateway
                            log.exception("gateway.message_failed", topic=str(message.topic))
                        handled += 1
                        if handled % YIELD_EVERY == 0:
                            # A queued message is taken without suspending, so a backlog
                            # of readings would be drained in one go while the event
                            # writer's commit and the acks wait: let them run.
                            await asyncio.sleep(0)
            except aiomqtt.MqttError as exc:
                log.warning(
                    "gateway.disconnected", connection=role, error=str(exc), retry_s=round(backoff, 2)
                )
            finally:
                if main:
                    self._client = None
                self._set_up(role, False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    # ------------------------------------------------------------------ intake

    async def _on_message(self, message: aiomqtt.Message, role: str = "main") -> None:
        topic = message.topic.value
        raw = message.payload
        payload = raw if isinstance(raw, bytes) else (str(raw).encode() if raw is not None else b"")
        self.stats.messages += 1
        parsed = p.parse_topic(topic)
        if parsed is None:
            m.MESSAGES.labels("other").inc()
            self._reject(
                p.claimed_device(topic),
                topic,
                payload,
                p.Rejection(p.Reason.bad_topic, "topic outside the v1 contract"),
            )
            return
        if parsed.channel in p.DOWNLINK:
            return  # our own acks and configs, echoed back by the wildcard subscription
        if role == "telemetry" and parsed.channel is not p.Channel.telemetry:
            return  # events and status: the QoS 1 connection has them
        self._channel_counter[parsed.channel].inc()
        arrived = time.monotonic()
        device = await self.directory.get(parsed.device_id)
        if device is None:
            self._reject(
                parsed.device_id,
                topic,
                payload,
                p.Rejection(p.Reason.unknown_device, "device not registered"),
            )
            return
        if not device.enabled:
            self._reject(
                device.id,
                topic,
                payload,
                p.Rejection(p.Reason.disabled_device, "device is disabled"),
                ack=True,
            )
            return
        if parsed.channel is p.Channel.events:
            self._on_event(device, topic, payload, arrived)
        elif parsed.channel is p.Channel.telemetry:
            self._on_telemetry(device, topic, payload)
        else:
            self._on_status(device, topic, payload, retained=message.retain)

    def _reject(
        self,
        device_id: str | None,
        topic: str,
        payload: bytes,
        rej: p.Rejection,
        *,
        ack: bool = False,
        event_id: str | None = None,
    ) -> None:
        self.rejects.add(device_id, rej.reason.value)
        if len(self._reject_buf) < 50_000:
            self._reject_buf.append(
                RejectRow(
                    received_at=self.clock.now(),
                    device_id=device_id[:64] if device_id else None,
                    topic=topic[:256],
                    reason=rej.reason.value,
                    detail=rej.detail[:500],
                    payload_size=len(payload),
                    payload_excerpt=p.excerpt(payload, self.settings.reject_excerpt_bytes),
                )
            )
        log.debug("gateway.rejected", device=device_id, reason=rej.reason.value, detail=rej.detail)
        if ack and device_id:
            if event_id is None:
                event_id = _best_effort_event_id(payload)
            self._send_ack(
                device_id,
                event_id,
                p.AckState.rejected,
                reason=f"{rej.reason.value}: {rej.detail}"[:200],
            )

    def _on_event(self, device: DeviceInfo, topic: str, payload: bytes, arrived: float) -> None:
        msg = p.parse_event(payload, self.settings.max_payload_bytes)
        if isinstance(msg, p.Rejection):
            self._reject(device.id, topic, payload, msg, ack=True)
            return
        now = self.clock.now()
        happened = msg.happened_at
        skew = (now - happened).total_seconds()
        local_hour = (
            happened.astimezone(self.tz).hour
            if abs(skew) <= self.settings.clock_skew_limit_s
            else now.astimezone(self.tz).hour
        )
        row = EventRow(
            device_id=device.id,
            event_id=msg.id,
            home_id=device.home_id,
            type=msg.type,
            event_class=p.classify(msg.type, msg.data, local_hour).value,
            sensor=msg.sensor,
            data=dict(msg.data),
            source="device",
            device_ts=happened,
            received_at=now,
            clock_skew_s=round(skew, 3),
            clock_suspect=abs(skew) > self.settings.clock_skew_limit_s,
            gateway=self.name,
            t_arrived=arrived,
        )
        self._seen(device.id, now)
        if msg.type == "test":
            self._pending_for(device.id).last_test_at = now
        self._enqueue(row)

    def _enqueue(self, row: EventRow) -> None:
        try:
            self._events.put_nowait(row)
        except asyncio.QueueFull:
            # Back-pressure: not acked, so the device resends once we have room.
            self.rejects.add(row.device_id, "overloaded")
            log.warning("gateway.queue_full", device=row.device_id, event=row.event_id)
        m.QUEUE_DEPTH.labels("events").set(self._events.qsize())

    def _pending_for(self, device_id: str) -> PendingState:
        st = self._pending.get(device_id)
        if st is None:
            st = self._pending[device_id] = PendingState()
        return st

    def _seen(self, device_id: str, at: datetime) -> None:
        st = self._pending_for(device_id)
        st.last_seen = at
        st.will_at = None

    def _on_telemetry(self, device: DeviceInfo, topic: str, payload: bytes) -> None:
        metrics = fast_telemetry_metrics(payload, self.settings.max_payload_bytes)
        if metrics is None:  # anything unusual: the full parser decides, and names the reason
            msg = p.parse_telemetry(payload, self.settings.max_payload_bytes)
            if isinstance(msg, p.Rejection):
                self._reject(device.id, topic, payload, msg, ack=True)
                return
            metrics = msg.metrics
        now = self.clock.now()
        st = self._pending_for(device.id)
        st.last_seen = now
        if self.telemetry_qos == 1:
            st.will_at = None
        # With readings on a connection of their own, one sent before the device's will
        # can be taken after it, so a reading cannot undo a will: a device that comes
        # back says "online" on its status topic (PROTOCOL.md), on the will's connection,
        # in order. (Taken as a return, such readings hid 2-3 % of a power cut's outages.)
        if st.metrics is None:
            st.metrics = dict(metrics)
        else:
            st.metrics.update(metrics)  # st.metrics is this flush's own dict (see _flush)
        st.metrics_at = now
        self._trend_point(device.id, metrics, now, st)
        battery = metrics.get("battery_pct")
        if isinstance(battery, int | float) and not isinstance(battery, bool):
            st.battery_pct = float(battery)
        self._apply_rules(device, metrics, now)

    async def _rules_tick(self) -> None:
        """Time-based rules (not back in bed, no movement) must fire even when the next
        reading is late, so every device with rule state is re-evaluated with no readings."""
        now = self.clock.now()
        for device_id in list(self._rule_state):
            info = self.directory.cached(device_id)
            if info is not None and info.enabled:
                self._apply_rules(info, {}, now)

    def _trend_point(self, device_id: str, metrics: dict[str, Any], now: datetime, st: PendingState) -> None:
        """Keep one hr/rr point a minute for the console's trend (not every reading)."""
        hr, rr = metrics.get("hr"), metrics.get("rr")
        hr_n = float(hr) if isinstance(hr, int | float) and not isinstance(hr, bool) else None
        rr_n = float(rr) if isinstance(rr, int | float) and not isinstance(rr, bool) else None
        if hr_n is None and rr_n is None:
            return
        ms = int(now.timestamp() * 1000)
        if ms - self._trend_last.get(device_id, 0) < 60_000:
            return
        self._trend_last[device_id] = ms
        st.trend.append((ms, hr_n, rr_n))

    def _apply_rules(self, device: DeviceInfo, metrics: dict[str, Any], now: datetime) -> None:
        cached = self._ranges.get(device.id)
        if cached is None or cached[0] is not device:  # a directory refresh brings new facts
            ranges = rules_mod.vital_ranges(
                self.rules,
                device.capacity_level,
                device.hr_min,
                device.hr_max,
                device.rr_min,
                device.rr_max,
            )
            self._ranges[device.id] = (device, ranges)
        else:
            ranges = cached[1]
        state = self._rule_state.get(device.id) or rules_mod.RuleState()
        state, derived = rules_mod.evaluate(
            self.rules, ranges, state, metrics, now, now.astimezone(self.tz).hour
        )
        self._rule_state[device.id] = state
        for d in derived:
            self.stats.derived += 1
            self._enqueue(
                EventRow(
                    device_id=device.id,
                    event_id=d.event_id,
                    home_id=device.home_id,
                    type=d.type,
                    event_class=p.classify(d.type, dict(d.data), now.astimezone(self.tz).hour).value,
                    sensor=None,
                    data=dict(d.data),
                    source="rule",
                    device_ts=None,
                    received_at=now,
                    clock_skew_s=None,
                    clock_suspect=False,
                    gateway=self.name,
                    t_arrived=time.monotonic(),
                    ack=False,
                )
            )

    def _on_status(self, device: DeviceInfo, topic: str, payload: bytes, *, retained: bool) -> None:
        msg = p.parse_status(payload, self.settings.max_payload_bytes)
        if isinstance(msg, p.Rejection):
            self._reject(device.id, topic, payload, msg, ack=not retained)
            return
        now = self.clock.now()
        st = self._pending_for(device.id)
        st.last_status = msg.state
        if msg.state == "offline":
            st.will_at = now  # a retained offline also tells a restarted gateway who is away
        elif not retained:
            # A retained "online" is old news, not a sign of life; a fresh one is.
            self._seen(device.id, now)
            self._push_config(device)

    # ------------------------------------------------------------------ acks / config

    def _send_ack(
        self, device_id: str, event_id: str | None, state: p.AckState, *, reason: str | None = None
    ) -> None:
        client = self._client
        if client is None:
            return  # the device resends; it will be acked then
        body: dict[str, Any] = {
            "event_id": event_id or "",  # "" when a rejected message had no readable id
            "state": state.value,
            "ts": self.clock.now_ms(),
        }
        if reason:
            body["reason"] = reason
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        task = asyncio.create_task(
            self._publish(client, p.topic_for(device_id, p.Channel.ack), payload, False)
        )
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)
        m.ACKS.labels(state.value).inc()
        self.stats.acks += 1

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes, retain: bool) -> None:
        try:
            await client.publish(topic, payload, qos=1, retain=retain)
        except aiomqtt.MqttError as exc:
            log.debug("gateway.publish_failed", topic=topic, error=str(exc))

    def _push_config(self, device: DeviceInfo) -> None:
        client = self._client
        if client is None:
            return
        payload = json.dumps({"heartbeat_s": device.heartbeat_s}, separators=(",", ":")).encode()
        task = asyncio.create_task(
            self._publish(client, p.topic_for(device.id, p.Channel.config), payload, True)
        )
        self._ack_tasks.add(task)
        task.add_done_callback(self._ack_tasks.discard)

    # ------------------------------------------------------------------ writers

    async def _event_writer(self) -> None:
        while True:
            first = await self._events.get()
            batch = [first]
            while len(batch) < self.settings.event_batch_max and not self._events.empty():
                batch.append(self._events.get_nowait())
            await self._commit_events(batch)
            m.QUEUE_DEPTH.labels("events").set(self._events.qsize())

    async def _commit_events(self, batch: list[EventRow]) -> None:
        backoff = 0.1
        while True:
            try:
                async with self.maker() as session, session.begin():
                    new = await insert_events(session, batch)
                break
            except IntegrityError as exc:
                # A row that cannot be stored (device deleted meanwhile) must not block
                # the others: store one by one and reject the bad ones.
                log.warning("gateway.batch_integrity_error", error=str(exc.orig)[:200], size=len(batch))
                new = await self._commit_one_by_one(batch)
                break
            except (OperationalError, DBAPIError, OSError) as exc:
                m.DB_ERRORS.inc()
                log.warning("gateway.db_unavailable", error=str(exc)[:200], retry_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        await self._after_commit(batch, new)

    async def _commit_one_by_one(self, batch: list[EventRow]) -> set[tuple[str, str]]:
        new: set[tuple[str, str]] = set()
        for row in batch:
            try:
                async with self.maker() as session, session.begin():
                    new |= await insert_events(session, [row])
            except IntegrityError as exc:
                self._reject(
                    row.device_id,
                    p.topic_for(row.device_id, p.Channel.events),
                    b"",
                    p.Rejection(p.Reason.unknown_device, str(exc.orig)[:200]),
                )
                row.ack = False
        return new

    async def _after_commit(self, batch: list[EventRow], new: set[tuple[str, str]]) -> None:
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
                self._send_ack(row.device_id, row.event_id, p.AckState.received)
                latency = now - row.t_arrived
                m.ACK_LATENCY.observe(latency)
                if len(self.stats.ack_latencies_ms) < 1_000_000:
                    self.stats.ack_latencies_ms.append(latency * 1000)
        if stored:
            await self.bus.publish("events", {"count": len(stored), "gateway": self.name})
            if self.on_stored is not None:
                await self.on_stored(stored)

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
        pending, self._pending = self._pending, {}
        rejects, self._reject_buf = self._reject_buf, []
        if not pending and not rejects:
            return
        hb = {d: self.directory.heartbeat(d) for d in pending}
        now = self.clock.now()
        try:
            async with self.maker() as session, session.begin():
                await insert_rejects(session, rejects)
                # A sign of life clears a pending will (_seen), so a will still pending
                # came after the device's last sign of life: write what was seen first,
                # then flip the will's devices offline. (The other order left a device
                # that announced itself and dropped within one flush online, with no
                # offline event, until it missed three heartbeats.)
                restored = await flush_states(session, pending, hb, self.settings.offline_after_intervals)
                wills = [d for d, st in pending.items() if st.will_at is not None]
                went_offline = await mark_offline(session, wills, now) if wills else []
                rows = [self._supervision_row(d, "online", now, offline_since=since) for d, since in restored]
                rows += [
                    self._supervision_row(d, "offline", now, last_seen=ls, cause="will")
                    for d, ls in went_offline
                ]
                new = await insert_events(session, rows)
        except Exception:
            # keep what we learned for the next flush rather than lose it
            for d, st in pending.items():
                self._pending.setdefault(d, st)
            self._reject_buf = rejects + self._reject_buf
            raise
        if rows:
            await self._after_commit(rows, new)

    async def _sweep(self) -> None:
        now = self.clock.now()
        async with self.maker() as session, session.begin():
            overdue = await sweep_overdue(session, now)
            rows = [
                self._supervision_row(d, "offline", now, last_seen=ls, cause="silent") for d, ls in overdue
            ]
            new = await insert_events(session, rows)
        if rows:
            log.info("gateway.devices_offline", count=len(rows))
            await self._after_commit(rows, new)

    def _supervision_row(
        self,
        device_id: str,
        kind: str,
        now: datetime,
        *,
        last_seen: datetime | None = None,
        offline_since: datetime | None = None,
        cause: str | None = None,
    ) -> EventRow:
        info = self.directory.cached(device_id)
        data: dict[str, Any] = {}
        if kind == "offline":
            anchor = now
            data = {"cause": cause, "last_seen": last_seen.isoformat() if last_seen else None}
            if info:
                data["heartbeat_s"] = info.heartbeat_s
        else:
            anchor = offline_since or now
            data = {
                "offline_since": offline_since.isoformat() if offline_since else None,
                "offline_s": round((now - offline_since).total_seconds(), 1) if offline_since else None,
            }
        return EventRow(
            device_id=device_id,
            event_id=f"sup-{kind}-{int(anchor.timestamp() * 1000)}",
            home_id=info.home_id if info else "",
            type=kind,
            event_class=p.EventClass.trouble.value,
            sensor=None,
            data=data,
            source="supervision",
            device_ts=None,
            received_at=now,
            clock_skew_s=None,
            clock_suspect=False,
            gateway=self.name,
            t_arrived=time.monotonic(),
            ack=False,
        )


_FAST_TOP = frozenset({"ts", "metrics"})
_FAST_INT = 10**15


def fast_telemetry_metrics(payload: bytes, max_bytes: int) -> dict[str, Any] | None:
    """The metrics of an ordinary telemetry message, or None to ask ``p.parse_telemetry``.

    The validating parser (JSON hooks per number, a walk for NUL and surrogates, pydantic)
    was a fifth of the gateway's CPU at 5,000 readings/s. Almost every reading is the same
    small shape, so this accepts only what the full parser certainly accepts with the same
    values: an object with ``metrics`` (and an epoch-ms ``ts``), ASCII keys and strings
    without NUL, finite numbers, booleans, nothing nested. Anything else (extra fields,
    non-ASCII text, RFC 3339 times, huge numbers, bad input) returns None and takes the
    full path, which also decides the rejection. A property test holds the two together.
    """
    if len(payload) > max_bytes:
        return None
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if type(obj) is not dict or not obj.keys() <= _FAST_TOP:
        return None
    ts = obj.get("ts")
    if ts is not None and not (type(ts) is int and p._TS_MIN_MS <= ts <= p._TS_MAX_MS):
        return None
    metrics = obj.get("metrics")
    if type(metrics) is not dict or len(metrics) > p.MAX_METRICS:
        return None
    for k, v in metrics.items():
        if not (0 < len(k) <= 64 and k.isascii() and "\x00" not in k):
            return None
        t = type(v)
        if t is int:
            if not -_FAST_INT < v < _FAST_INT:
                return None
        elif t is float:
            if not math.isfinite(v):
                return None
        elif t is str:
            if not (len(v) <= p.MAX_METRIC_STR and v.isascii() and "\x00" not in v):
                return None
        elif t is not bool:
            return None
    return metrics


def _best_effort_event_id(payload: bytes) -> str | None:
    """The id of a rejected event, when one can be read, so the device knows which."""
    if len(payload) > 16 * 1024:
        return None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict):
        ident = obj.get("id")
        if isinstance(ident, str) and len(ident) <= 64:
            return ident
    return None


def utcnow() -> datetime:
    return datetime.now(UTC)

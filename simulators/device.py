"""One simulated device in a family care bed, speaking protocol v1 as a real MQTT client.

Each device owns its own connection (client id = username = device id) so the broker's
per-device ACL, will messages and connection limits are exercised exactly as real homes
would exercise them; a shared "load generator" connection would test none of that.

All waiting goes through the clock it is given (``simulators.clock.SimClock``), so
``--speed N`` compresses heartbeats, resend backoff and reconnect backoff alike. Latency
is the exception: it is measured on the real monotonic clock, because the platform's
processing time does not speed up with the simulation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import socket
import ssl
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from pydantic import ValidationError

from device_gateway.kinds import DeviceKind
from device_gateway.protocol import AckMessage, AckState, Channel, ConfigMessage, topic_for
from simulators.body import Body, Metric
from simulators.clock import SimClock
from simulators.scenario import Scenario

log = logging.getLogger(__name__)

ONLINE = b'{"state":"online"}'
OFFLINE = b'{"state":"offline"}'

# The sensor behind a hub that raises each type, so hub events look like real hub events.
HUB_SENSORS: dict[str, str] = {
    "sos": "pull-cord",
    "smoke": "kitchen-smoke",
    "gas": "kitchen-gas",
    "water_leak": "bathroom-water",
    "door_open": "front-door",
    "inactivity": "living-room-pir",
    "tamper": "hub-case",
}


@dataclass(frozen=True)
class DeviceSpec:
    """What the registry knows about a device; the simulator needs nothing else."""

    device_id: str
    kind: str
    home_id: str
    secret: str
    heartbeat_s: int


@dataclass
class AckSeen:
    """A progress ack after ``received``; kept so a demo can show the whole story per call."""

    state: str
    at_mono: float
    reason: str | None = None


@dataclass
class EventRecord:
    """Delivery history of one event, the raw material of the run report."""

    event_id: str
    type: str
    ts_ms: int
    created_mono: float
    sensor: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    first_publish_mono: float | None = None
    sends: int = 0
    received_mono: float | None = None
    later: list[AckSeen] = field(default_factory=list)
    rejected_reason: str | None = None
    # A misbehaving device (scenario ``resend_forever``) ignores ``received`` and keeps
    # resending; the ack still counts as received, so the report credits the platform.
    ignore_acks: bool = False
    acks_ignored: int = 0

    @property
    def received(self) -> bool:
        return self.received_mono is not None

    @property
    def rejected(self) -> bool:
        """Rejected before being stored: resending the same bytes would be rejected again."""
        return self.rejected_reason is not None and self.received_mono is None

    @property
    def settled(self) -> bool:
        return self.received or self.rejected

    @property
    def resends(self) -> int:
        return max(0, self.sends - 1)

    @property
    def latency_ms(self) -> float | None:
        """First publish to ``received``, so resends caused by a slow platform count against it."""
        if self.received_mono is None or self.first_publish_mono is None:
            return None
        return (self.received_mono - self.first_publish_mono) * 1000.0


class SimulatedDevice:
    """A device that connects, heartbeats, raises events and insists until they are stored."""

    def __init__(
        self,
        spec: DeviceSpec,
        *,
        host: str,
        port: int,
        clock: SimClock,
        scenario: Scenario | None = None,
        seed: int = 1,
        run_id: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        connect_gate: asyncio.Semaphore | None = None,
        keepalive_s: int = 30,
    ) -> None:
        self.spec = spec
        self._host = host
        self._port = port
        self._clock = clock
        self._scenario = scenario or Scenario()
        self._tls_context = tls_context
        self._gate = connect_gate
        self._keepalive_s = keepalive_s
        self._topic = {ch: topic_for(spec.device_id, ch) for ch in Channel}
        # Separate streams: event contents stay reproducible however often telemetry fires.
        self._rng = random.Random(f"{seed}:{spec.device_id}:device")
        self._event_rng = random.Random(f"{seed}:{spec.device_id}:events")
        # Random per process start, so a restarted simulator never reuses an event id the
        # platform has already stored (it would be deduplicated as a resend).
        self.run_id = run_id or secrets.token_hex(4)
        self._counter = 0

        self.records: dict[str, EventRecord] = {}
        self._settled: dict[str, asyncio.Event] = {}
        self.config: dict[str, Any] = {}
        self.heartbeat_s = self._scenario.heartbeat_for(spec.kind, spec.heartbeat_s)
        self.telemetry_sent = 0
        self.connects = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.drops = 0
        self.unknown_acks = 0
        self.bad_downlinks = 0

        self._client: aiomqtt.Client | None = None
        self._online = asyncio.Event()
        self._session_over = asyncio.Event()
        self._stop = asyncio.Event()
        self._silence = asyncio.Event()
        self._wake = asyncio.Event()
        self._after_silence = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._conn_task: asyncio.Task[None] | None = None

        self.body = Body(spec.kind, self._scenario, self._rng, self._event_rng, clock.now())

    # ------------------------------------------------------------------ public state

    @property
    def device_id(self) -> str:
        return self.spec.device_id

    @property
    def online(self) -> bool:
        return self._client is not None

    @property
    def silent(self) -> bool:
        return self._silence.is_set()

    @property
    def pending(self) -> list[EventRecord]:
        return [r for r in self.records.values() if not r.settled]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin connecting and heartbeating; returns at once, connecting in the background."""
        if self._conn_task is not None:
            raise RuntimeError(f"device {self.device_id} already started")
        self._conn_task = self._spawn(self._connection_loop())
        self._spawn(self._telemetry_loop())

    async def wait_online(self) -> None:
        """Until connected and subscribed (bound it with ``asyncio.timeout``)."""
        await self._online.wait()

    async def stop(self) -> None:
        """Disconnect cleanly (the will does not fire: a planned stop is not a device failure)."""
        self._stop.set()
        if self._conn_task is not None and not self._conn_task.done():
            await asyncio.wait({self._conn_task}, timeout=5.0)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def go_silent(self) -> None:
        """Drop off the network as a dead battery would: no DISCONNECT, so the will fires."""
        if self._silence.is_set():
            return
        self.drops += 1
        self._wake.clear()
        self._silence.set()
        if self._client is not None:
            await self._session_over.wait()

    def come_back(self) -> None:
        """Reconnect after ``go_silent``; pending events are resent once connected."""
        if not self._silence.is_set():
            return
        self._after_silence = True
        self._silence.clear()
        self._wake.set()

    # ------------------------------------------------------------------ events

    def raise_event(
        self,
        event_type: str,
        *,
        sensor: str | None = None,
        data: dict[str, Any] | None = None,
        ignore_acks: bool = False,
        resend_interval_s: float | None = None,
        max_sends: int | None = None,
    ) -> EventRecord:
        """Record an event and deliver it in the background until the platform stores it.

        With ``ignore_acks`` the device misbehaves: it resends the same bytes every
        ``resend_interval_s`` simulated seconds (the scenario's backoff when None) whatever
        the platform answers, until ``max_sends`` copies (None: until stopped).
        """
        if self._stop.is_set():
            raise RuntimeError(f"device {self.device_id} is stopped")
        self._counter += 1
        event_id = f"{self.run_id}-{self._counter:06d}"
        if sensor is None and self.spec.kind == DeviceKind.hub:
            sensor = HUB_SENSORS.get(event_type)
        record = EventRecord(
            event_id=event_id,
            type=event_type,
            ts_ms=self._clock.now_ms(),
            created_mono=time.monotonic(),
            sensor=sensor,
            data=self.body.event_data(event_type, self._clock.now()) if data is None else dict(data),
        )
        self.records[event_id] = record
        settled = asyncio.Event()
        self._settled[event_id] = settled
        if ignore_acks:
            record.ignore_acks = True
            self._spawn(self._deliver_forever(record, resend_interval_s, max_sends))
        else:
            self._spawn(self._deliver(record, settled))
        return record

    async def _deliver(self, record: EventRecord, settled: asyncio.Event) -> None:
        """Resend with backoff until ``received`` (or ``rejected``); the same bytes every time."""
        payload = self._event_payload(record)
        policy = self._scenario.resend
        delay = policy.initial_s
        while not settled.is_set():
            client = self._client
            if client is None:
                await self._wait_any(self._online, settled)
                delay = policy.initial_s  # a fresh connection deserves a prompt resend
                continue
            session_over = self._session_over
            if self._send(client, self._topic[Channel.events], payload, qos=1):
                record.sends += 1
                if record.first_publish_mono is None:
                    record.first_publish_mono = time.monotonic()
                log.debug("event %s/%s sent (copy %d)", self.device_id, record.event_id, record.sends)
            await self._wait_any(settled, session_over, timeout_s=delay)
            delay = min(delay * policy.factor, policy.max_s)

    async def _deliver_forever(
        self, record: EventRecord, interval_s: float | None, max_sends: int | None
    ) -> None:
        """Resend regardless of acks: a device whose firmware never hears ``received``."""
        payload = self._event_payload(record)
        policy = self._scenario.resend
        delay = interval_s if interval_s is not None else policy.initial_s
        # A fixed interval is a fixed-rate timer: copy k is due k intervals after the first,
        # in simulated time. A loop turn that comes late (a busy event loop at ×1000 is tens
        # of simulated seconds) sends the copies that fell due meanwhile, as such a timer
        # does, instead of pushing every later copy back and sending fewer than the
        # scenario says.
        due: datetime | None = None
        while max_sends is None or record.sends < max_sends:
            client = self._client
            if client is None:
                await self._online.wait()
                due = None  # a timer restarted by the reconnect
                continue
            session_over = self._session_over
            if self._send(client, self._topic[Channel.events], payload, qos=1):
                record.sends += 1
                if record.first_publish_mono is None:
                    record.first_publish_mono = time.monotonic()
            if interval_s is None:
                await self._wait_any(session_over, timeout_s=delay)
                delay = min(delay * policy.factor, policy.max_s)
                continue
            due = (due or self._clock.now()) + timedelta(seconds=interval_s)
            wait_s = (due - self._clock.now()).total_seconds()
            if wait_s > 0:
                await self._wait_any(session_over, timeout_s=wait_s)
            else:
                await asyncio.sleep(0)  # overdue: send it now, but let the loop breathe

    def _event_payload(self, record: EventRecord) -> bytes:
        body: dict[str, Any] = {"id": record.event_id, "ts": record.ts_ms, "type": record.type}
        if record.sensor is not None:
            body["sensor"] = record.sensor
        if record.data:
            body["data"] = record.data
        return json.dumps(body, separators=(",", ":")).encode()

    # ------------------------------------------------------------------ connection

    def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self._host,
            self._port,
            identifier=self.device_id,
            username=self.device_id,
            password=self.spec.secret,
            will=aiomqtt.Will(self._topic[Channel.status], OFFLINE, qos=1, retain=True),
            keepalive=self._keepalive_s,
            tls_context=self._tls_context,
            logger=log,
        )

    async def _connection_loop(self) -> None:
        policy = self._scenario.reconnect
        delay = policy.initial_s
        while not self._stop.is_set():
            if self._silence.is_set():
                await self._wait_any(self._stop, self._wake)
                continue
            connects_before = self.connects
            try:
                await self._session()
                delay = policy.initial_s
            except (aiomqtt.MqttError, OSError) as exc:
                if self._stop.is_set():
                    break
                if self.connects > connects_before:
                    delay = policy.initial_s  # was connected: the broker went away
                else:
                    self.connect_failures += 1
                log.debug("device %s connection lost or refused: %s", self.device_id, exc)
                # Jitter, so a county of devices does not reconnect in lockstep after a restart.
                await self._wait_any(self._stop, timeout_s=delay * self._rng.uniform(0.5, 1.0))
                delay = min(delay * policy.factor, policy.max_s)

    async def _session(self) -> None:
        """One connection, from CONNECT to its end (error, planned stop, simulated power loss)."""
        client = self._new_client()
        gate = self._gate
        if gate is not None:
            await gate.acquire()
        try:
            async with client:
                if gate is not None:
                    gate.release()
                    gate = None
                await client.subscribe([(self._topic[Channel.ack], 1), (self._topic[Channel.config], 1)])
                await client.publish(self._topic[Channel.status], ONLINE, qos=1, retain=True)
                await self._run_session(client)
        finally:
            if gate is not None:
                gate.release()
            self._session_over.set()

    async def _run_session(self, client: aiomqtt.Client) -> None:
        self.connects += 1
        if self.connects > 1 and not self._after_silence:
            self.reconnects += 1
        self._after_silence = False
        self._session_over = asyncio.Event()
        self._client = client
        self._online.set()
        log.debug("device %s online", self.device_id)
        reader = asyncio.create_task(self._read(client))
        stopping = asyncio.create_task(self._stop.wait())
        silencing = asyncio.create_task(self._silence.wait())
        try:
            done, _ = await asyncio.wait({reader, stopping, silencing}, return_when=asyncio.FIRST_COMPLETED)
            self._client = None
            self._online.clear()
            if reader in done:
                reader.result()  # the connection broke: re-raise its MqttError
            elif silencing in done and not self._stop.is_set():
                self._abort(client)
                # Wait for the library to notice the dead socket, so leaving the context
                # does not try to send DISCONNECT (which would cancel the will).
                await asyncio.wait({reader}, timeout=2.0)
        finally:
            self._client = None
            self._online.clear()
            for task in (reader, stopping, silencing):
                task.cancel()
            await asyncio.gather(reader, stopping, silencing, return_exceptions=True)

    def _abort(self, client: aiomqtt.Client) -> None:
        """Half-close the TCP connection with no MQTT DISCONNECT: the broker must fire the will."""
        sock = client._client.socket()
        if isinstance(sock, socket.socket):  # SSLSocket included
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                log.debug("device %s abort: %s", self.device_id, exc)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if message.topic.matches(self._topic[Channel.ack]):
                self._on_ack(payload)
            elif message.topic.matches(self._topic[Channel.config]):
                self._on_config(payload)

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = AckMessage.model_validate_json(payload)
        except ValidationError:
            self.bad_downlinks += 1
            log.debug("device %s: unreadable ack %r", self.device_id, payload[:200])
            return
        record = self.records.get(ack.event_id)
        if record is None:
            self.unknown_acks += 1
            log.debug("device %s: ack for unknown event %s", self.device_id, ack.event_id)
            return
        now = time.monotonic()
        log.debug("device %s: ack %s %s", self.device_id, ack.event_id, ack.state.value)
        if ack.state is AckState.received:
            if record.received_mono is None:
                record.received_mono = now
            if record.ignore_acks:
                record.acks_ignored += 1
                return
            self._settled[ack.event_id].set()
            return
        record.later.append(AckSeen(ack.state.value, now, ack.reason))
        if ack.state is AckState.rejected:
            record.rejected_reason = ack.reason or ""
            if record.received_mono is None:
                self._settled[ack.event_id].set()

    def _on_config(self, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained config
        try:
            config = ConfigMessage.model_validate_json(payload)
        except ValidationError:
            self.bad_downlinks += 1
            log.debug("device %s: unreadable config %r", self.device_id, payload[:200])
            return
        self.config = config.model_dump(exclude_none=True)
        if config.heartbeat_s is not None and config.heartbeat_s > 0:
            self.heartbeat_s = float(config.heartbeat_s)
        log.debug("device %s: config %s", self.device_id, self.config)

    def _send(self, client: aiomqtt.Client, topic: str, payload: bytes, *, qos: int) -> bool:
        """Hand a message to the live connection without waiting for PUBACK.

        Event delivery is confirmed by the platform's ``received`` ack, not by the broker's
        PUBACK, so waiting for PUBACK would only stall the resend timer when the connection
        dies with a message in flight.
        """
        info = client._client.publish(topic, payload, qos=qos)
        return info.rc == paho.MQTT_ERR_SUCCESS

    # ------------------------------------------------------------------ telemetry

    async def _telemetry_loop(self) -> None:
        # A random phase, so devices started together do not heartbeat in lockstep.
        await self._clock.sleep(self._rng.uniform(0.0, self.heartbeat_s))
        jitter = self._scenario.telemetry.jitter
        while True:
            client = self._client
            if client is not None:
                body = {"ts": self._clock.now_ms(), "metrics": self.metrics()}
                payload = json.dumps(body, separators=(",", ":")).encode()
                topic = self._topic[Channel.telemetry]
                if self._send(client, topic, payload, qos=self._scenario.telemetry.qos):
                    self.telemetry_sent += 1
                    log.debug("telemetry %s %s", self.device_id, body["metrics"])
            await self._clock.sleep(self.heartbeat_s * (1.0 + self._rng.uniform(-jitter, jitter)))

    def metrics(self) -> dict[str, Metric]:
        """Current readings, shaped by kind, time of day and recent events."""
        return self.body.metrics(self._clock.now())

    # ------------------------------------------------------------------ plumbing

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("device %s task failed", self.device_id, exc_info=task.exception())

    async def _wait_any(self, *events: asyncio.Event, timeout_s: float | None = None) -> None:
        """Until one event is set or ``timeout_s`` simulated seconds pass."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(e.wait()) for e in events]
        if timeout_s is not None:
            waiters.append(asyncio.ensure_future(self._clock.sleep(timeout_s)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

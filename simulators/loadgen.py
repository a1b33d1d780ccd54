"""Load mode: one privileged MQTT identity publishing on behalf of many registered devices.

A county of 100,000 homes cannot hold 100,000 sockets on a test machine, but the platform
must still see the message rates of one. The broker lets a device registered with
``privileged=True`` publish under any device's topics (``device_gateway.broker.may_publish``
and the ``loadgen`` role written by ``broker_config``), so one paho connection can speak for many
devices whose ids the gateway knows. What it cannot exercise (per-device ACLs, wills,
connection limits) is exactly what the per-device mode in ``simulators.device`` covers.

paho rather than aiomqtt because it is the fastest Python client measured on this machine
(≈21k msg/s through Mosquitto against ≈11k for aiomqtt) and the benchmark's baseline uses
the same library, so "ratio to baseline" compares like with like. TCP_NODELAY is set on
every socket: without it QoS 0 publishes show 33 ms Nagle tail spikes that would be
blamed on the platform.

Every run is bounded (a message count and a deadline) and refuses non-loopback brokers
unless told otherwise, like the per-device simulator.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from simulators.runner import check_host, percentile

ROOT = "carecall/v1/devices"


_PADDING: dict[tuple[int, int, int], dict[str, str]] = {}


def telemetry_payload(seq: int, ts_ms: int, pad_to: int = 200) -> bytes:
    """The ``seq``-th heartbeat reading at ``ts_ms``, padded to ``pad_to`` bytes like the
    baseline's payload with string metrics of at most 64 characters (MAX_METRIC_STR: one
    longer string makes every reading a bad_value rejection, not telemetry). The padding
    depends only on the lengths of the varying numbers, so it is worked out once."""
    body: dict[str, Any] = {
        "ts": ts_ms,
        "metrics": {"hr": 60 + seq % 20, "rr": 14, "presence": "in_bed", "battery_pct": 80},
    }
    key = (pad_to, len(str(ts_ms)), len(str(body["metrics"]["hr"])))
    pad = _PADDING.get(key)
    if pad is None:
        pad = {}
        raw = json.dumps(body, separators=(",", ":"))
        n = 0
        while len(raw) < pad_to:
            name = f"fw{n}" if n else "fw"
            pad[name] = "x" * max(0, min(64, pad_to - len(raw) - len(name) - 6))
            raw = json.dumps({**body, "metrics": {**body["metrics"], **pad}}, separators=(",", ":"))
            n += 1
        _PADDING[key] = pad
    body["metrics"].update(pad)
    return json.dumps(body, separators=(",", ":")).encode()


def _nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    """paho's on_socket_open hook: switch Nagle off before the first byte is sent."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # a TLS or websocket wrapper without the option
        pass


def paho_client(
    host: str,
    port: int,
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    max_inflight: int = 200,
    allow_remote: bool = False,
    timeout_s: float = 10.0,
) -> paho.Client:
    """A connected paho client (MQTT 3.1.1, clean session, TCP_NODELAY) with its network
    loop running in paho's own thread; raises ConnectionError when the broker refuses."""
    check_host(host, allow_remote=allow_remote)
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    if username is not None:
        client.username_pw_set(username, password)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.on_socket_open = _nodelay
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    connected = threading.Event()
    result: list[Any] = []

    def on_connect(_c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        result.append(rc)
        connected.set()

    client.on_connect = on_connect
    client.connect(host, port, keepalive=30)
    client.loop_start()
    if not connected.wait(timeout_s) or (result and getattr(result[0], "is_failure", False)):
        client.loop_stop()
        raise ConnectionError(f"MQTT connect to {host}:{port} as {client_id!r} failed: {result[:1]}")
    return client


def subscribe_and_wait(client: paho.Client, topic: str, qos: int = 1, timeout_s: float = 10.0) -> bool:
    """Subscribe and block until SUBACK, so nothing published right after is missed.

    Returns False when the broker refused the filter (SUBACK 0x80: Mosquitto does that for
    a filter its ACL denies, silently as far as the connection is concerned)."""
    done = threading.Event()
    granted: list[bool] = []
    previous = client.on_subscribe

    def on_subscribe(_c: Any, _u: Any, _mid: Any, codes: Any = None, *_rest: Any) -> None:
        codes = codes if isinstance(codes, list) else []
        granted.append(not any(getattr(c, "is_failure", False) for c in codes))
        done.set()

    client.on_subscribe = on_subscribe
    client.subscribe(topic, qos=qos)
    if not done.wait(timeout_s):
        raise TimeoutError(f"no SUBACK for {topic}")
    client.on_subscribe = previous
    return all(granted)


@dataclass
class SentEvent:
    """Delivery history of one event sent in load mode (monotonic seconds)."""

    device_id: str
    event_id: str
    payload: bytes
    first_sent: float
    sends: int = 1
    last_sent: float = 0.0
    acked: float | None = None
    rejected: str | None = None
    acks: int = 0  # every ``received`` heard, copies of a resend included

    @property
    def latency_ms(self) -> float | None:
        return None if self.acked is None else (self.acked - self.first_sent) * 1000.0


@dataclass
class LoadStats:
    """What a load run did; the bench and the chaos tests read these numbers."""

    telemetry_sent: int = 0
    events_sent: int = 0
    resends: int = 0
    status_sent: int = 0
    acks_seen: int = 0
    unknown_acks: int = 0
    publish_errors: int = 0
    started: float = field(default_factory=time.monotonic)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """count/p50/p90/p99/max with nearest-rank percentiles (always an observed value)."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 0.50), 2),
        "p90": round(percentile(ordered, 0.90), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "max": round(ordered[-1], 2),
    }


class LoadGenerator:
    """Publishes telemetry and events for many devices over one privileged connection,
    and (through a second connection allowed to read acks) tracks each event until the
    platform acks it ``received``, resending like a real device does until then.

    Thread model: paho runs each connection's network loop in its own thread; the caller's
    thread does the pacing. Shared state is guarded by one lock.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        ack_username: str | None = None,
        ack_password: str | None = None,
        client_id: str = "carecall-loadgen",
        allow_remote: bool = False,
        resend_s: float = 2.0,
        resend_factor: float = 1.0,
        resend_max_s: float | None = None,
        max_inflight: int = 500,
        pub_client_id: str | None = None,
    ) -> None:
        check_host(host, allow_remote=allow_remote)
        # the publishing connection's client id; by default the username, as a broker that
        # checks device keys wants (a platform account may use any)
        self._pub_client_id = pub_client_id
        self.host, self.port = host, port
        self._creds = (username, password)
        self._ack_creds = (ack_username, ack_password) if ack_username else (username, password)
        self._client_id = client_id
        self._allow_remote = allow_remote
        self._max_inflight = max_inflight
        self.resend_s = resend_s
        # Backoff like a device's: the n-th resend waits resend_s * factor**(n-1), capped.
        self.resend_factor = max(1.0, resend_factor)
        self.resend_max_s = resend_max_s
        self.acks_observed: bool | None = None  # None until start(track_acks=True)
        self.stats = LoadStats()
        self.events: dict[tuple[str, str], SentEvent] = {}
        self._pending: dict[tuple[str, str], SentEvent] = {}
        self._lock = threading.Lock()
        self._pub: paho.Client | None = None
        self._acks: paho.Client | None = None
        self.on_ack: Callable[[SentEvent], None] | None = None
        self._seq = 0

    @property
    def username(self) -> str | None:
        return self._creds[0]

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, track_acks: bool = True) -> None:
        user, pwd = self._creds
        self._pub = paho_client(
            self.host,
            self.port,
            self._pub_client_id
            or user
            or self._client_id,  # brokers that check keys want client id = device id
            username=user,
            password=pwd,
            max_inflight=self._max_inflight,
            allow_remote=self._allow_remote,
        )
        if track_acks:
            auser, apwd = self._ack_creds
            self._acks = paho_client(
                self.host,
                self.port,
                f"{self._client_id}-acks",
                username=auser,
                password=apwd,
                allow_remote=self._allow_remote,
            )
            self._acks.on_message = self._on_ack
            self.acks_observed = subscribe_and_wait(self._acks, f"{ROOT}/+/ack", qos=1)

            def resubscribe(c: paho.Client, _u: Any, _f: Any, _rc: Any, _p: Any = None) -> None:
                # a clean session forgets subscriptions: after a broker restart, ask again
                c.subscribe(f"{ROOT}/+/ack", qos=1)

            self._acks.on_connect = resubscribe

    def close(self) -> None:
        for client in (self._pub, self._acks):
            if client is not None:
                client.disconnect()
                client.loop_stop()
        self._pub = self._acks = None

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ acks

    def _on_ack(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        parts = msg.topic.split("/")
        if len(parts) != 5:
            return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        key = (parts[3], str(body.get("event_id", "")))
        state = body.get("state")
        with self._lock:
            self.stats.acks_seen += 1
            ev = self.events.get(key)
            if ev is None:
                self.stats.unknown_acks += 1
                return
            if state == "received":
                ev.acks += 1
                if ev.acked is not None:
                    return
                ev.acked = now
                self._pending.pop(key, None)
            elif state == "rejected" and ev.acked is None:
                ev.rejected = str(body.get("reason", ""))
                self._pending.pop(key, None)
            else:
                return
        if self.on_ack is not None:
            self.on_ack(ev)

    # ------------------------------------------------------------------ publishing

    def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        client = self._pub
        if client is None:
            raise RuntimeError("LoadGenerator.start() first")
        info = client.publish(topic, payload, qos=qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.stats.publish_errors += 1

    def telemetry(self, device_id: str, *, qos: int = 1, pad_to: int = 200) -> None:
        """One heartbeat reading; padded to ``pad_to`` bytes like the baseline's payload."""
        self._seq += 1
        payload = telemetry_payload(self._seq, int(time.time() * 1000), pad_to)
        self._publish(f"{ROOT}/{device_id}/telemetry", payload, qos)
        self.stats.telemetry_sent += 1

    def event(
        self,
        device_id: str,
        event_id: str,
        event_type: str = "sos",
        *,
        sensor: str | None = "loadgen",
        data: dict[str, Any] | None = None,
        send: bool = True,
        ts_ms: int | None = None,
    ) -> SentEvent:
        """Send one event (QoS 1) and track it until acked; resent by ``resend_due``.

        ``send=False`` records it without publishing (a device raising an alarm while it is
        offline holds it and sends it when back: see ``resend_now``)."""
        body: dict[str, Any] = {"id": event_id, "ts": ts_ms or int(time.time() * 1000), "type": event_type}
        if sensor is not None:
            body["sensor"] = sensor
        if data:
            body["data"] = data
        payload = json.dumps(body, separators=(",", ":")).encode()
        now = time.monotonic()
        ev = SentEvent(device_id, event_id, payload, first_sent=now, last_sent=now, sends=1 if send else 0)
        with self._lock:
            self.events[(device_id, event_id)] = ev
            self._pending[(device_id, event_id)] = ev
        if send:
            self._publish(f"{ROOT}/{device_id}/events", payload, 1)
        self.stats.events_sent += 1
        return ev

    @staticmethod
    def _mark_sent(due: Sequence[SentEvent], now: float) -> int:
        """Count a send of each (under the lock); a held event's first send is no resend."""
        resends = 0
        for ev in due:
            if ev.sends == 0:
                ev.first_sent = now
            else:
                resends += 1
            ev.sends += 1
            ev.last_sent = now
        return resends

    def _resend_wait(self, ev: SentEvent) -> float:
        wait = self.resend_s * self.resend_factor ** min(ev.sends - 1, 60)
        return wait if self.resend_max_s is None else min(wait, self.resend_max_s)

    def resend_due(self, now: float | None = None, *, hold: Callable[[str], bool] | None = None) -> int:
        """Resend every event not acked within its backoff of its last send (a device's
        behaviour: it keeps trying until it hears ``received``). ``hold(device_id)`` true
        keeps a device's events back (it is offline: it resends when it returns)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = [
                ev
                for ev in self._pending.values()
                if now - ev.last_sent >= self._resend_wait(ev) and (hold is None or not hold(ev.device_id))
            ]
            resends = self._mark_sent(due, now)
        for ev in due:
            self._publish(f"{ROOT}/{ev.device_id}/events", ev.payload, 1)
        self.stats.resends += resends
        return len(due)

    def resend_now(self, device_id: str) -> int:
        """Resend at once every unacked event of one device (it has just come back)."""
        now = time.monotonic()
        with self._lock:
            due = [ev for ev in self._pending.values() if ev.device_id == device_id]
            resends = self._mark_sent(due, now)
        for ev in due:
            self._publish(f"{ROOT}/{ev.device_id}/events", ev.payload, 1)
        self.stats.resends += resends
        return len(due)

    def copy(self, ev: SentEvent) -> None:
        """Send one more copy of an event whatever was acked (a device that resends forever)."""
        with self._lock:
            ev.sends += 1
            ev.last_sent = time.monotonic()
        self._publish(f"{ROOT}/{ev.device_id}/events", ev.payload, 1)
        self.stats.resends += 1

    def clear_statuses(self, device_ids: Sequence[str], timeout_s: float = 30.0) -> int:
        """Delete the retained ``status`` left by ``status`` (an empty retained message, QoS
        1) of each device, so a shared broker keeps nothing of a simulated device after the
        run; returns how many the broker acknowledged within ``timeout_s``.

        Waits for the PUBACKs: beyond the connection's in-flight window paho holds the rest
        back, and a ``close`` right after dropped them with the connection (821 of 1,000
        statuses left, tests/integration/test_retained_sweep.py)."""
        client = self._pub
        if client is None:
            raise RuntimeError("LoadGenerator.start() first")
        deadline = time.monotonic() + timeout_s
        infos = [client.publish(f"{ROOT}/{d}/status", b"", qos=1, retain=True) for d in device_ids]
        acked = 0
        for info in infos:
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_AGAIN):
                self.stats.publish_errors += 1
                continue
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                acked += info.is_published()
        return acked

    def status(self, device_id: str, state: str) -> None:
        """The device's retained ``status``: ``offline`` is what the broker would publish as
        its will when it loses power; ``online`` is what it says when it reconnects."""
        payload = json.dumps({"state": state}, separators=(",", ":")).encode()
        client = self._pub
        if client is None:
            raise RuntimeError("LoadGenerator.start() first")
        info = client.publish(f"{ROOT}/{device_id}/status", payload, qos=1, retain=True)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            self.stats.publish_errors += 1
        self.stats.status_sent += 1

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def wait_acked(self, timeout_s: float, *, poll_s: float = 0.05) -> bool:
        """Resend as needed until every event is settled or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.pending:
                return True
            self.resend_due()
            time.sleep(poll_s)
        return not self.pending

    def ack_latencies_ms(self, keys: Sequence[tuple[str, str]] | None = None) -> list[float]:
        with self._lock:
            evs = self.events.values() if keys is None else [self.events[k] for k in keys if k in self.events]
            return [v for ev in evs if (v := ev.latency_ms) is not None]

    # ------------------------------------------------------------------ paced runs

    def run_paced(
        self,
        *,
        telemetry_per_s: float,
        events_per_s: float,
        duration_s: float,
        devices: Sequence[str],
        event_devices: Sequence[str] | None = None,
        event_prefix: str = "lg",
        event_type: str = "sos",
        telemetry_qos: int = 1,
        max_messages: int = 5_000_000,
        tick_s: float = 0.005,
        on_tick: Callable[[float], None] | None = None,
    ) -> list[tuple[str, str]]:
        """Send telemetry and events at steady rates for ``duration_s`` (bounded also by
        ``max_messages``), resending unacked events on the way; returns the event keys.

        Pacing is by schedule, not by sleep length: each tick sends what is due by now, so
        a slow tick is made up by the next one and the average rate stays exact.
        """
        if not devices:
            raise ValueError("no devices to publish for")
        ev_devs = list(event_devices or devices)
        keys: list[tuple[str, str]] = []
        t0 = time.monotonic()
        end = t0 + duration_s
        sent_t = sent_e = 0
        last_progress = t0
        while True:
            now = time.monotonic()
            if now >= end or sent_t + sent_e >= max_messages:
                break
            elapsed = now - t0
            due_t = int(elapsed * telemetry_per_s) - sent_t
            due_e = int(elapsed * events_per_s) - sent_e
            for _ in range(max(0, due_t)):
                self.telemetry(devices[sent_t % len(devices)], qos=telemetry_qos)
                sent_t += 1
            for _ in range(max(0, due_e)):
                dev = ev_devs[sent_e % len(ev_devs)]
                ev_id = f"{event_prefix}-{sent_e:06d}"
                self.event(dev, ev_id, event_type)
                keys.append((dev, ev_id))
                sent_e += 1
            if now - last_progress >= 0.25:
                self.resend_due(now)
                if on_tick is not None:
                    on_tick(elapsed / duration_s)
                last_progress = now
            time.sleep(tick_s)
        return keys

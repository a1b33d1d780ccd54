"""The gateway's broker connections: where the broker is, how a platform client is set up,
what each connection subscribes to, and the order messages are taken in."""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiomqtt

from device_gateway import protocol as p


@dataclass(frozen=True, slots=True)
class MqttTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    # The broker refuses every uplink channel the contract does not name (the embedded
    # broker's rules, device_gateway/broker.py), so the gateway subscribes by name
    # (device_gateway/lanes.py ``lane_plan``).
    named_channels: bool = False
    # QoS 1 publishes a client keeps in flight (paho's window). The embedded broker shares
    # the client's event loop, so a PUBACK costs loop turns, not a network round trip; a
    # window of 200 there held a storm's acks in the gateway's queue (1,870 waiting) until
    # the devices resent (issue 15).
    max_inflight: int = 200

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
        max_inflight_messages=target.max_inflight,
        max_queued_outgoing_messages=100_000,
        tls_context=ssl.create_default_context() if target.tls else None,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        queue_type=queue_type,
    )
    client.pending_calls_threshold = 100_000
    return client


def subscriptions(*, telemetry_qos: int, shared_group: str | None) -> list[tuple[str, int]]:
    """(filter, QoS) pairs that never overlap (an overlap delivers one message twice on
    some brokers, and MQTT makes the broker use the highest QoS of the overlap).

    Telemetry is disposable state (the latest readings; the next one replaces it), so
    by default it is taken at QoS 0: no PUBACK per reading, which was the largest cost
    of the gateway. Events and status stay QoS 1 (at-least-once, deduplicated on
    (device, id) when stored). The QoS 0 filter is every five-level topic, on a
    connection of its own (``connections``): it carries the readings, and any
    unknown channel (``{root}/bogus``) that a misconfigured broker let through, which
    docs/protocol.md has the gateway count; the events and status it also sees there are
    left to the QoS 1 connection. Deeper or shallower topics are received and counted
    as ``bad_topic`` too. With ``telemetry_qos=1`` one connection takes every
    five-level topic at QoS 1, as before.
    """
    root = p.TOPIC_PREFIX
    if telemetry_qos == 1:
        base = [(f"{root}/+/+", 1)]
    else:
        base = [
            (f"{root}/+/{p.Channel.events.value}", 1),
            (f"{root}/+/{p.Channel.status.value}", 1),
            (f"{root}/+/+", 0),
        ]
    base += [(f"{root}/+/+/+/#", 1), (f"{root}/+", 1)]  # anything deeper, anything shallower
    if shared_group:
        return [(f"$share/{shared_group}/{t}", q) for t, q in base]
    return base


def connections(subs: list[tuple[str, int]]) -> list[tuple[str, list[tuple[str, int]]]]:
    """(role, subscriptions) of each broker connection.

    With telemetry at QoS 0 it has a connection of its own: QoS 0 has no flow
    control, so when the gateway falls behind, the backlog of readings waits in that
    connection's socket and the broker's buffer, not in front of an alarm. Events and
    status arrive on the other connection, whose socket the event loop serves every
    turn, and the UplinkQueue puts them first. (On one shared connection an SOS sat
    behind seconds of queued readings at 5,000 readings/s.)"""
    telemetry = [t for t in subs if t[1] == 0]
    main = [t for t in subs if t not in telemetry]
    return [("main", main)] + ([("telemetry", telemetry)] if telemetry else [])


def device_key(topic: str) -> str:
    """The device a topic claims (``carecall/v1/devices/{id}/…``); the topic otherwise."""
    parts = topic.split("/", 4)
    return parts[3] if len(parts) > 3 else topic


class UplinkQueue(asyncio.Queue[aiomqtt.Message]):
    """Incoming messages, alarms first, and no device ahead of another.

    One broker connection carries thousands of telemetry readings a second and, now and
    then, an SOS. In arrival order the SOS would wait behind every reading queued before
    it; here events and live status jump the queue, so the alarm path's latency does not
    grow with the telemetry backlog.

    Among events and status the devices take turns (round robin, FIFO within a device):
    one device flooding junk queues behind itself only, so another device's SOS waits for
    at most one message of each other busy device, not for the whole flood."""

    def _init(self, maxsize: int) -> None:
        self._urgent: dict[str, collections.deque[aiomqtt.Message]] = {}
        self._turns: collections.deque[str] = collections.deque()  # devices with urgent messages
        self._n_urgent = 0
        self._bulk: collections.deque[aiomqtt.Message] = collections.deque()

    def qsize(self) -> int:
        return self._n_urgent + len(self._bulk)

    def empty(self) -> bool:
        return not (self._n_urgent or self._bulk)

    def _put(self, item: aiomqtt.Message) -> None:
        # Retained messages are old news replayed on subscribe (on a shared broker, the
        # retained status of every device that ever connected, known to us or not, each
        # an unknown-device lookup): they must not hold up a live alarm either.
        topic = item.topic.value
        if item.retain or topic.endswith("/telemetry"):
            self._bulk.append(item)
            return
        key = device_key(topic)
        waiting = self._urgent.get(key)
        if waiting is None:
            waiting = self._urgent[key] = collections.deque()
            self._turns.append(key)
        waiting.append(item)
        self._n_urgent += 1

    def _get(self) -> aiomqtt.Message:
        if not self._turns:
            return self._bulk.popleft()
        key = self._turns.popleft()
        waiting = self._urgent[key]
        item = waiting.popleft()
        self._n_urgent -= 1
        if waiting:
            self._turns.append(key)  # its next message after every other device's
        else:
            del self._urgent[key]
        return item

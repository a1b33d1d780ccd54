"""Retained messages a simulated run leaves on a shared broker, and taking them away.

Two channels of protocol v1 are retained (docs/protocol.md): a device's ``status`` (its
``online`` after every connect, and its will) and the ``config`` the gateway answers a
fresh ``online`` with. A broker keeps a retained message until someone replaces it, so a
harness that plays devices on the machine's Mosquitto (``carecall bench --target real``,
load mode, the integration tests) must remove what its devices caused: every gateway that
subscribes later is replayed all of it, each message an unknown-device lookup for a
platform whose registry never knew that run (a few runs of the 40,000-device integration
test left thousands, and a later test's gateway took longer than its 15 s to reach the
one will it waited for).

``sweep`` clears them for a set of device ids: it asks the broker which of those devices'
retained topics hold a message (``find_retained``: one subscription per retained channel,
the replay known to be complete when a marker published after it comes back), then
publishes an empty retained message, QoS 1, to each (``clear_topics``: pipelined, every
PUBACK waited for), both bounded in time. Only topics that hold something are cleared: an
empty retained publish is also delivered live, so clearing every topic of a 4,000-device
bench blindly would hand each gateway on the shared broker 8,000 empty messages, each a
rejection.

The subscriptions are QoS 0 so the replay is not cut at Mosquitto's queue limit (1,000
QoS 1 messages waiting per client by default) and arrives in order with the marker.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho

from device_gateway.protocol import Channel, parse_topic, topic_for
from simulators.loadgen import ROOT, paho_client, subscribe_and_wait

RETAINED_CHANNELS: tuple[Channel, ...] = (Channel.status, Channel.config)


# --------------------------------------------------------------------------- pure


def retained_filters() -> list[str]:
    """The subscriptions that replay every device's retained messages, one per channel."""
    return [f"{ROOT}/+/{ch.value}" for ch in RETAINED_CHANNELS]


def retained_topics(device_ids: Iterable[str]) -> list[str]:
    """Every topic on which a retained message of these devices can sit, sorted."""
    return sorted({topic_for(d, ch) for d in device_ids for ch in RETAINED_CHANNELS})


def to_clear(device_ids: Collection[str], retained: Iterable[str]) -> list[str]:
    """Of the topics found holding a retained message, those of these devices on a retained
    channel, sorted: never another device's (the broker is shared), never a topic outside
    the protocol (it is not ours to judge)."""
    ids = device_ids if isinstance(device_ids, set | frozenset) else set(device_ids)
    out: set[str] = set()
    for topic in retained:
        parsed = parse_topic(topic)
        if parsed is not None and parsed.channel in RETAINED_CHANNELS and parsed.device_id in ids:
            out.add(topic)
    return sorted(out)


@dataclass(frozen=True)
class SweepReport:
    devices: int  # device ids swept
    found: int  # of their topics holding a retained message
    cleared: int  # emptied, PUBACK received
    unacked: int  # emptied, no PUBACK within the time allowed
    complete: bool  # the broker's replay was seen to its end (else ``found`` may be short)
    seconds: float

    def line(self) -> str:
        tail = "" if self.complete else " (replay not seen to its end in time: some may be left)"
        if self.unacked:
            tail += f"; {self.unacked} not acknowledged in time"
        return (
            f"retained messages of the run's {self.devices:,} devices: {self.found:,} found, "
            f"{self.cleared:,} cleared in {self.seconds:.1f} s{tail}"
        )


# --------------------------------------------------------------------------- broker


@dataclass(frozen=True)
class Found:
    topics: frozenset[str]  # topics holding a non-empty retained message
    complete: bool


def find_retained(
    host: str,
    port: int,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
    allow_remote: bool = False,
) -> Found:
    """Every topic on the retained channels that holds a retained message now."""
    token = secrets.token_hex(4)
    marker = f"carecall/sweep/{token}"
    topics: set[str] = set()
    lock = threading.Lock()
    done = threading.Event()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == marker:
            done.set()
        elif msg.retain and msg.payload:  # MQTT 3.1.1: only a replayed copy is flagged retained
            with lock:
                topics.add(msg.topic)

    deadline = time.monotonic() + timeout_s
    client = paho_client(
        host,
        port,
        f"carecall-sweep-find-{token}",
        username=username,
        password=password,
        allow_remote=allow_remote,
        timeout_s=timeout_s,
    )
    try:
        client.on_message = on_message
        for f in retained_filters():
            if not subscribe_and_wait(client, f, qos=0, timeout_s=max(0.1, deadline - time.monotonic())):
                raise PermissionError(f"the broker refused the subscription {f}")
        # Subscribed after the replay was queued; so is the marker published next: when it
        # comes back, every retained message queued before it has been delivered.
        subscribe_and_wait(client, marker, qos=0, timeout_s=max(0.1, deadline - time.monotonic()))
        client.publish(marker, b"", qos=0)
        complete = done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return Found(frozenset(topics), complete)


def clear_topics(
    host: str,
    port: int,
    topics: Iterable[str],
    *,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 20.0,
    allow_remote: bool = False,
) -> tuple[int, int]:
    """An empty retained message, QoS 1, on each topic, pipelined; (acknowledged, not
    acknowledged by the deadline)."""
    todo = list(topics)
    if not todo:
        return 0, 0
    deadline = time.monotonic() + timeout_s
    client = paho_client(
        host,
        port,
        f"carecall-sweep-clear-{secrets.token_hex(4)}",
        username=username,
        password=password,
        max_inflight=1_000,
        allow_remote=allow_remote,
        timeout_s=timeout_s,
    )
    try:
        infos = [client.publish(t, b"", qos=1, retain=True) for t in todo]
        for info in infos:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(RuntimeError, ValueError):  # refused outright: not acked
                info.wait_for_publish(left)
        acked = sum(1 for info in infos if _acked(info))
    finally:
        client.disconnect()
        client.loop_stop()
    return acked, len(todo) - acked


def _acked(info: paho.MQTTMessageInfo) -> bool:
    """PUBACK received (paho raises instead of answering for a message it never sent)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


def sweep(
    host: str,
    port: int,
    device_ids: Collection[str],
    *,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 30.0,
    allow_remote: bool = False,
) -> SweepReport:
    """Clear every retained message of these devices (``status`` and ``config``) the broker
    holds; at most ``timeout_s`` in all (a third of it to find them)."""
    t0 = time.monotonic()
    ids = frozenset(device_ids)
    found = find_retained(
        host, port, username=username, password=password, timeout_s=timeout_s / 3, allow_remote=allow_remote
    )
    topics = to_clear(ids, found.topics)
    acked, unacked = clear_topics(
        host,
        port,
        topics,
        username=username,
        password=password,
        timeout_s=max(1.0, timeout_s - (time.monotonic() - t0)),
        allow_remote=allow_remote,
    )
    return SweepReport(len(ids), len(topics), acked, unacked, found.complete, round(time.monotonic() - t0, 2))

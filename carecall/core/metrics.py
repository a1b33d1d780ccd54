"""Prometheus counters and gauges of the gateway (served on /metrics).

Per-device counts live in the database (rejected_messages) and in ``RejectCounter``,
never as Prometheus labels: a label per device would explode the series count.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PCounter

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES = PCounter(
    "carecall_gateway_messages_total",
    "MQTT messages received, by channel",
    ["channel"],
    registry=REGISTRY,
)
REJECTED = PCounter(
    "carecall_gateway_rejected_total", "Messages rejected, by reason", ["reason"], registry=REGISTRY
)
EVENTS_STORED = PCounter(
    "carecall_gateway_events_stored_total",
    "Events newly stored, by source",
    ["source"],
    registry=REGISTRY,
)
EVENTS_DUPLICATE = PCounter(
    "carecall_gateway_events_duplicate_total",
    "Resent events recognised as already stored (acked again, stored once)",
    registry=REGISTRY,
)
ACKS = PCounter("carecall_gateway_acks_total", "Acks published, by state", ["state"], registry=REGISTRY)
ACK_LATENCY = Histogram(
    "carecall_gateway_ack_latency_seconds",
    "Event received by the gateway → 'received' ack published (after commit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "carecall_gateway_event_batch_size",
    "Events committed per transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
DB_ERRORS = PCounter(
    "carecall_gateway_db_errors_total", "Failed database writes (retried)", registry=REGISTRY
)
DEVICES = Gauge("carecall_gateway_devices", "Registered devices by liveness", ["state"], registry=REGISTRY)
QUEUE_DEPTH = Gauge(
    "carecall_gateway_queue_depth", "Messages waiting to be written", ["queue"], registry=REGISTRY
)
MQTT_CONNECTED = Gauge(
    "carecall_gateway_mqtt_connected", "1 while connected to the broker", registry=REGISTRY
)
READINGS_SHED = PCounter(
    "carecall_gateway_readings_shed_total",
    "Readings not handled one by one under overload: merged into the device's waiting "
    "reading, or dropped (device_gateway/shedding.py); alarms are never shed",
    ["how"],
    registry=REGISTRY,
)
LANE = Gauge(
    "carecall_gateway_lane",
    "1 for the lane this gateway process serves (all, events, readings)",
    ["lane"],
    registry=REGISTRY,
)
RECONNECTS = PCounter("carecall_gateway_mqtt_reconnects_total", "Broker reconnects", registry=REGISTRY)
REJECTS_SUPPRESSED = PCounter(
    "carecall_gateway_rejects_suppressed_total",
    "Rejected messages counted but neither stored one by one nor acked (per-device rate "
    "limit; summarised in rejected_messages.messages)",
    ["reason"],
    registry=REGISTRY,
)
DEVICE_RELOADS = PCounter(
    "carecall_gateway_device_reloads_total",
    "Devices reloaded from the registry on a 'devices' bus message",
    registry=REGISTRY,
)

OVERFLOW_DEVICE = "*"  # RejectCounter key of devices past its limit (never a device id)


class RejectCounter:
    """Rejections by (device, reason) since start, for the console and tests.

    Exact, and bounded: past ``max_keys`` (device, reason) pairs (a spray of made-up
    device ids in topics), new pairs are counted under the device ``"*"``, so the totals
    by reason stay exact while memory stays flat."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.by_device_reason: Counter[tuple[str | None, str]] = Counter()
        self.max_keys = max_keys
        self._by_reason: dict[str, PCounter] = {}  # labelled children, resolved once

    def add(self, device_id: str | None, reason: str) -> None:
        key = (device_id, reason)
        counts = self.by_device_reason
        if key not in counts and len(counts) >= self.max_keys:
            key = (OVERFLOW_DEVICE, reason)
        counts[key] += 1
        child = self._by_reason.get(reason)
        if child is None:
            child = self._by_reason[reason] = REJECTED.labels(reason)
        child.inc()

    def by_reason(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (_, reason), n in self.by_device_reason.items():
            out[reason] += n
        return dict(out)

    @property
    def total(self) -> int:
        return sum(self.by_device_reason.values())

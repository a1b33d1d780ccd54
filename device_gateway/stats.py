"""Counters of one gateway copy, read by tests and the benchmark (Prometheus has its own)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class GatewayStats:
    messages: int = 0
    channels: dict[str, int] = field(default_factory=dict)  # uplink messages received, per channel
    off_lane: int = 0  # of those, messages of the other lane (never, with its subscriptions)
    events_stored: int = 0
    events_duplicate: int = 0
    derived: int = 0
    acks: int = 0
    ack_latencies_ms: list[float] = field(default_factory=list)

"""Telemetry: the fast path for ordinary readings, and what readings leave behind (the
device's latest state, a trend point a minute, and the rules' derived events).

Readings are the gateway's bulk (thousands a second) and never a call by themselves; the
rules (device_gateway/rules.py) turn them into events that go through the same writer as
the devices' own.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from device_gateway import protocol as p
from device_gateway import rules as rules_mod
from device_gateway.protocol.messages import TS_MAX_MS, TS_MIN_MS
from device_gateway.stats import GatewayStats
from device_gateway.store import DeviceInfo, EventRow, PendingState

_FAST_TOP = frozenset({"ts", "metrics"})
_FAST_INT = 10**15


def fast_telemetry_metrics(payload: bytes, max_bytes: int) -> dict[str, Any] | None:
    """The metrics of an ordinary telemetry message, or None to ask ``p.parse_telemetry``
    (``fast_telemetry`` without the time)."""
    plain = fast_telemetry(payload, max_bytes)
    return None if plain is None else plain[1]


def fast_telemetry(payload: bytes, max_bytes: int) -> tuple[int | None, dict[str, Any]] | None:
    """``(ts, metrics)`` of an ordinary telemetry message, or None to ask ``p.parse_telemetry``.

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
    if ts is not None and not (type(ts) is int and TS_MIN_MS <= ts <= TS_MAX_MS):
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
    return ts, metrics


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class TelemetryRules:
    """Per-device memory of the readings: rule state, vital ranges, the trend's pace."""

    def __init__(
        self,
        *,
        rules: rules_mod.RulesConfig,
        tz: ZoneInfo,
        name: str,
        stats: GatewayStats,
        enqueue: Callable[[EventRow], None],
    ) -> None:
        self.rules = rules
        self.tz = tz
        self.name = name
        self.stats = stats
        self.enqueue = enqueue
        self._ranges: dict[str, tuple[DeviceInfo, rules_mod.VitalRanges]] = {}
        self._rule_state: dict[str, rules_mod.RuleState] = {}
        self._trend_last: dict[str, int] = {}

    def take(self, device: DeviceInfo, metrics: dict[str, Any], now: datetime, st: PendingState) -> None:
        """One device's readings, received ``now``: into its pending state, and the rules."""
        if st.metrics is None:
            st.metrics = dict(metrics)
        else:
            st.metrics.update(metrics)  # st.metrics is this flush's own dict (see StateWriter.flush)
        st.metrics_at = now
        self._trend_point(device.id, metrics, now, st)
        battery = _number(metrics.get("battery_pct"))
        if battery is not None:
            st.battery_pct = battery
        self.apply(device, metrics, now)

    def devices(self) -> list[str]:
        """Devices with rule state (the time-based rules' tick re-evaluates them)."""
        return list(self._rule_state)

    def forget(self, device_id: str, info: DeviceInfo | None) -> None:
        """Per-device memory that must not outlive a registry change."""
        self._ranges.pop(device_id, None)  # the next reading recomputes them
        if info is None or not info.enabled:
            self._rule_state.pop(device_id, None)  # no rule may fire for it any more
            self._trend_last.pop(device_id, None)

    def _trend_point(self, device_id: str, metrics: dict[str, Any], now: datetime, st: PendingState) -> None:
        """Keep one hr/rr point a minute for the console's trend (not every reading)."""
        hr_n, rr_n = _number(metrics.get("hr")), _number(metrics.get("rr"))
        if hr_n is None and rr_n is None:
            return
        ms = int(now.timestamp() * 1000)
        if ms - self._trend_last.get(device_id, 0) < 60_000:
            return
        self._trend_last[device_id] = ms
        st.trend.append((ms, hr_n, rr_n))

    def apply(self, device: DeviceInfo, metrics: dict[str, Any], now: datetime) -> None:
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
            self.enqueue(
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

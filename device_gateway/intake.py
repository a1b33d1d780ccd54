"""The intake: one broker message in, per channel.

A message's topic is checked, its device looked up (device_gateway/directory.py), then:
an event is parsed and queued for the writer (device_gateway/writer.py), which acks it
after the commit; telemetry updates the device's pending state and feeds the rules
(device_gateway/telemetry.py); status records the device's availability. Whatever is
refused is counted per device and reason, stored and acked within the device's rate
limit (device_gateway/limits.py), and summarised beyond it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiomqtt
import structlog

from carecall.core import metrics as m
from carecall.core.clock import Clock
from config.settings import Settings
from device_gateway import protocol as p
from device_gateway.directory import DeviceDirectory
from device_gateway.downlink import Downlink
from device_gateway.lanes import Lane, lane_takes
from device_gateway.limits import RejectLimiter, Suppressed
from device_gateway.stats import GatewayStats
from device_gateway.store import DeviceInfo, EventRow, PendingState, RejectRow
from device_gateway.telemetry import TelemetryRules, fast_telemetry_metrics

log = structlog.get_logger("carecall.gateway")

REJECT_BUF_MAX = 50_000  # rejection rows waiting for a flush; past it, summaries only

# What the intake learned since the last flush: device state, rejection rows, summaries.
Learned = tuple[dict[str, PendingState], list[RejectRow], list[Suppressed]]


class Intake:
    def __init__(
        self,
        *,
        settings: Settings,
        clock: Clock,
        name: str,
        tz: ZoneInfo,
        telemetry_qos: int,
        directory: DeviceDirectory,
        downlink: Downlink,
        telemetry: TelemetryRules,
        enqueue: Callable[[EventRow], None],
        stats: GatewayStats,
        rejects: m.RejectCounter,
        limiter: RejectLimiter,
        lane: Lane = Lane.all,
    ) -> None:
        self.settings = settings
        self.lane = lane
        self.clock = clock
        self.name = name
        self.tz = tz
        self.telemetry_qos = telemetry_qos
        self.directory = directory
        self.downlink = downlink
        self.telemetry = telemetry
        self.enqueue = enqueue
        self.stats = stats
        self.rejects = rejects
        self.limiter = limiter
        self._pending: dict[str, PendingState] = {}
        self._reject_buf: list[RejectRow] = []
        # Prometheus children resolved once: .labels() takes a lock and a dict lookup per call
        self._channel_counter = {ch: m.MESSAGES.labels(ch.value) for ch in p.Channel}
        self._suppressed_children: dict[str, Any] = {}

    # ------------------------------------------------------------------ what was learned

    def take(self) -> Learned:
        """Everything learned since the last call, for the flush to write."""
        pending, self._pending = self._pending, {}
        rejects, self._reject_buf = self._reject_buf, []
        return pending, rejects, self.limiter.drain()

    def give_back(self, learned: Learned) -> None:
        """A flush that failed: keep what it took for the next one rather than lose it."""
        pending, rejects, summaries = learned
        for d, st in pending.items():
            self._pending.setdefault(d, st)
        self._reject_buf = rejects + self._reject_buf
        self.limiter.restore(summaries)

    def pending_for(self, device_id: str) -> PendingState:
        st = self._pending.get(device_id)
        if st is None:
            st = self._pending[device_id] = PendingState()
        return st

    def _seen(self, device_id: str, at: datetime) -> None:
        st = self.pending_for(device_id)
        st.last_seen = at
        st.will_at = None

    # ------------------------------------------------------------------ messages

    async def on_message(self, message: aiomqtt.Message, role: str = "main") -> None:
        topic = message.topic.value
        raw = message.payload
        payload = raw if isinstance(raw, bytes) else (str(raw).encode() if raw is not None else b"")
        parsed = p.parse_topic(topic)
        if parsed is None:
            self.stats.messages += 1
            m.MESSAGES.labels("other").inc()
            self.reject(
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
        channel = parsed.channel.value
        self.stats.channels[channel] = self.stats.channels.get(channel, 0) + 1
        if not lane_takes(self.lane, parsed.channel):
            # the other lane's: its subscriptions keep it away (device_gateway/lanes.py), so
            # this counts a broker or configuration that delivers it anyway
            self.stats.off_lane += 1
            return
        # counted once: not our own echoes, nor the QoS 0 copies of events left above
        self.stats.messages += 1
        self._channel_counter[parsed.channel].inc()
        arrived = time.monotonic()
        device = await self.directory.get(parsed.device_id)
        if device is None:
            self.reject(
                parsed.device_id,
                topic,
                payload,
                p.Rejection(p.Reason.unknown_device, "device not registered"),
            )
            return
        if not device.enabled:
            self.reject(
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

    def reject(
        self,
        device_id: str | None,
        topic: str,
        payload: bytes,
        rej: p.Rejection,
        *,
        ack: bool = False,
        event_id: str | None = None,
    ) -> None:
        """Count every rejection; store a row and ack only within the device's rate limit
        (device_gateway/limits.py): the rest are summarised at the next flush."""
        reason = rej.reason.value
        device_id = device_id[:64] if device_id else None
        self.rejects.add(device_id, reason)
        now = time.monotonic()
        if len(self._reject_buf) >= REJECT_BUF_MAX:  # the database is away: summarise, keep memory flat
            self.limiter.suppress(device_id, reason, topic[:256], len(payload), now)
            self._suppressed_counter(reason).inc()
            return
        if not self.limiter.admit(device_id, reason, topic[:256], len(payload), now):
            self._suppressed_counter(reason).inc()
            return
        self._reject_buf.append(
            RejectRow(
                received_at=self.clock.now(),
                device_id=device_id,
                topic=topic[:256],
                reason=reason,
                detail=rej.detail[:500],
                payload_size=len(payload),
                payload_excerpt=p.excerpt(payload, self.settings.reject_excerpt_bytes),
            )
        )
        log.debug("gateway.rejected", device=device_id, reason=reason, detail=rej.detail)
        if ack and device_id:
            if event_id is None:
                event_id = _best_effort_event_id(payload)
            self.downlink.ack(
                device_id,
                event_id,
                p.AckState.rejected,
                reason=f"{rej.reason.value}: {rej.detail}"[:200],
            )

    def _suppressed_counter(self, reason: str) -> Any:
        child = self._suppressed_children.get(reason)
        if child is None:
            child = self._suppressed_children[reason] = m.REJECTS_SUPPRESSED.labels(reason)
        return child

    def _on_event(self, device: DeviceInfo, topic: str, payload: bytes, arrived: float) -> None:
        msg = p.parse_event(payload, self.settings.max_payload_bytes)
        if isinstance(msg, p.Rejection):
            self.reject(device.id, topic, payload, msg, ack=True)
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
            self.pending_for(device.id).last_test_at = now
        self.enqueue(row)

    def _on_telemetry(self, device: DeviceInfo, topic: str, payload: bytes) -> None:
        metrics = fast_telemetry_metrics(payload, self.settings.max_payload_bytes)
        if metrics is None:  # anything unusual: the full parser decides, and names the reason
            msg = p.parse_telemetry(payload, self.settings.max_payload_bytes)
            if isinstance(msg, p.Rejection):
                self.reject(device.id, topic, payload, msg, ack=True)
                return
            metrics = msg.metrics
        now = self.clock.now()
        st = self.pending_for(device.id)
        st.last_seen = now
        if self.telemetry_qos == 1:
            st.will_at = None
        # With readings on a connection of their own, one sent before the device's will
        # can be taken after it, so a reading cannot undo a will: a device that comes
        # back says "online" on its status topic (docs/protocol.md), on the will's
        # connection, in order. (Taken as a return, such readings hid 2-3 % of a power
        # cut's outages.)
        self.telemetry.take(device, metrics, now, st)

    def _on_status(self, device: DeviceInfo, topic: str, payload: bytes, *, retained: bool) -> None:
        msg = p.parse_status(payload, self.settings.max_payload_bytes)
        if isinstance(msg, p.Rejection):
            self.reject(device.id, topic, payload, msg, ack=not retained)
            return
        now = self.clock.now()
        st = self.pending_for(device.id)
        st.last_status = msg.state
        if msg.state == "offline":
            st.will_at = now  # a retained offline also tells a restarted gateway who is away
        elif not retained:
            # A retained "online" is old news, not a sign of life; a fresh one is.
            self._seen(device.id, now)
            self.downlink.config(device.id, device.heartbeat_s)


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

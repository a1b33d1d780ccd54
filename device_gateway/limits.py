"""What one device's bad input may cost the platform: pure decisions, no I/O.

Every rejected message is counted exactly (Prometheus and ``RejectCounter``), but storing
a row and publishing a ``rejected`` ack for each one let a single device flooding junk
(1,000 messages a second) occupy the database and the broker for everyone. So the
expensive part is rate-limited per device with a token bucket: the first ``burst``
rejections of a device, then ``per_s`` a second, are kept as a row and answered; the rest
are only counted, and each (device, reason) gets one summary row per flush saying how
many were suppressed (``RejectedMessage.messages``). A global bucket bounds the rows and
acks of many devices at once (a spray of random device ids), and both tables are bounded
whatever the number of devices, so memory stays flat under any flood.

A device that resends an event as docs/protocol.md asks (5 s, doubling, up to 60 s) always
finds a token again, so its ``rejected`` ack comes at the latest with a resend.
"""

from __future__ import annotations

from dataclasses import dataclass

DEVICE_BURST = 20
DEVICE_PER_S = 1.0
GLOBAL_BURST = 2_000
GLOBAL_PER_S = 500.0
MAX_DEVICES = 10_000
MAX_SUMMARIES = 10_000
OVERFLOW = "*"  # summary key of devices past MAX_SUMMARIES (not a valid device id)


@dataclass(slots=True)
class TokenBucket:
    """``burst`` tokens at most, refilled at ``per_s`` a second (monotonic time)."""

    burst: float
    per_s: float
    tokens: float
    at: float

    @classmethod
    def full(cls, burst: float, per_s: float, now: float) -> TokenBucket:
        return cls(burst, per_s, burst, now)

    def level(self, now: float) -> float:
        return min(self.burst, self.tokens + max(0.0, now - self.at) * self.per_s)

    def take(self, now: float) -> bool:
        self.tokens = self.level(now)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class Suppressed:
    """Rejections of one (device, reason) counted but neither stored nor acked."""

    device_id: str | None  # None: no readable device, or devices past the summary limit
    reason: str
    topic: str  # the latest one seen
    count: int
    largest: int  # largest payload, bytes
    first_at: float
    last_at: float


class RejectLimiter:
    """Decides, per rejected message, whether it is stored and acked (True) or only
    counted into a summary (False). Not thread-safe; one per gateway copy."""

    def __init__(
        self,
        *,
        burst: int = DEVICE_BURST,
        per_s: float = DEVICE_PER_S,
        global_burst: int = GLOBAL_BURST,
        global_per_s: float = GLOBAL_PER_S,
        max_devices: int = MAX_DEVICES,
        max_summaries: int = MAX_SUMMARIES,
        now: float = 0.0,
    ) -> None:
        if burst < 1 or per_s <= 0 or global_burst < 1 or global_per_s <= 0:
            raise ValueError("limits must allow at least one message")
        self.burst, self.per_s = float(burst), per_s
        self.max_devices, self.max_summaries = max_devices, max_summaries
        self._global = TokenBucket.full(global_burst, global_per_s, now)
        self._buckets: dict[str | None, TokenBucket] = {}
        self._suppressed: dict[tuple[str | None, str], Suppressed] = {}
        self.suppressed_total = 0

    def admit(self, device_id: str | None, reason: str, topic: str, size: int, now: float) -> bool:
        bucket = self._buckets.get(device_id)
        if bucket is None:
            if len(self._buckets) >= self.max_devices:
                self._forget_idle(now)
            bucket = self._buckets[device_id] = TokenBucket.full(self.burst, self.per_s, now)
        # The device's own token first: a flooding device must not drain the global bucket
        # that quiet devices' occasional rejections need.
        if bucket.take(now) and self._global.take(now):
            return True
        self.suppress(device_id, reason, topic, size, now)
        return False

    def _forget_idle(self, now: float) -> None:
        """Drop buckets that have refilled (forgetting them changes nothing); if every
        device is mid-flood, start afresh: the global bucket still bounds the cost."""
        full_after = self.burst / self.per_s
        self._buckets = {d: b for d, b in self._buckets.items() if now - b.at < full_after}
        if len(self._buckets) >= self.max_devices:
            self._buckets.clear()

    def suppress(self, device_id: str | None, reason: str, topic: str, size: int, now: float) -> None:
        self.suppressed_total += 1
        key = (device_id, reason)
        s = self._suppressed.get(key)
        if s is None:
            if len(self._suppressed) >= self.max_summaries:
                key = (None, reason)
                device_id = None
                s = self._suppressed.get(key)
            if s is None:
                s = self._suppressed[key] = Suppressed(device_id, reason, topic, 0, 0, now, now)
        s.count += 1
        s.topic = topic
        s.largest = max(s.largest, size)
        s.last_at = now

    def drain(self) -> list[Suppressed]:
        """The summaries since the last drain (each (device, reason) once)."""
        out, self._suppressed = list(self._suppressed.values()), {}
        return out

    def restore(self, summaries: list[Suppressed]) -> None:
        """Put back summaries that could not be written (merged with newer ones)."""
        for s in summaries:
            key = (s.device_id, s.reason)
            cur = self._suppressed.get(key)
            if cur is None:
                if len(self._suppressed) >= self.max_summaries and s.device_id is not None:
                    key = (None, s.reason)
                    cur = self._suppressed.get(key)
                    if cur is None:
                        self._suppressed[key] = Suppressed(
                            None, s.reason, s.topic, s.count, s.largest, s.first_at, s.last_at
                        )
                        continue
                else:
                    self._suppressed[key] = s
                    continue
            cur.count += s.count
            cur.largest = max(cur.largest, s.largest)
            cur.first_at = min(cur.first_at, s.first_at)

    def forget(self, device_id: str) -> None:
        """A device's registry facts changed (re-enabled, re-keyed): a fresh bucket."""
        self._buckets.pop(device_id, None)

    @property
    def tracked_devices(self) -> int:
        return len(self._buckets)

    @property
    def pending_summaries(self) -> int:
        return len(self._suppressed)

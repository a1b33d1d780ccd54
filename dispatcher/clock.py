"""Time, optionally running faster than real time for demos and tests (``--speed N``).

Every component asks a Clock for "now" and sleeps through it, so one factor speeds up
simulated devices, supervision and escalation timers alike. Production runs at speed 1.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._real0 = time.monotonic()
        self._wall0 = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=(time.monotonic() - self._real0) * self.speed)

    def now_ms(self) -> int:
        return int(self.now().timestamp() * 1000)

    async def sleep(self, simulated_seconds: float) -> None:
        await asyncio.sleep(max(0.0, simulated_seconds) / self.speed)

    def real_seconds(self, simulated_seconds: float) -> float:
        return simulated_seconds / self.speed


class SystemClock(Clock):
    """Real time; 'now' is always the wall clock."""

    def __init__(self) -> None:
        super().__init__(1.0)

    def now(self) -> datetime:
        return datetime.now(UTC)


def make_clock(speed: float) -> Clock:
    return SystemClock() if speed == 1.0 else Clock(speed)

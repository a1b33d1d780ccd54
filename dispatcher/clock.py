"""Time, optionally running faster than real time for demos and tests (``--speed N``).

Every component asks a Clock for "now" and sleeps through it, so one factor speeds up
simulated devices, supervision and escalation timers alike. Production runs at speed 1.

``CatchUpClock`` is the demo's history mode (``carecall demo --history-days D``): it starts
D days in the past, runs at ×fast until simulated time reaches the real "now", then runs
at ×1 for good. Human-scale moments (an alarm, an operator's click, an escalation timer)
would be smeared by compression — at ×10,000 one millisecond of processing is ten
simulated seconds — so whoever knows such a moment is coming asks for a ``hold``: the
clock runs at the slower ×fine rate around it. Sleepers are woken by simulated time
whatever the rate does meanwhile.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
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

    def hold(self, start: datetime, end: datetime) -> None:
        """Ask for fine time resolution between ``start`` and ``end`` (simulated). Only a
        CatchUpClock acts on it; at a constant speed there is nothing to slow down."""


class SystemClock(Clock):
    """Real time; 'now' is always the wall clock."""

    def __init__(self) -> None:
        super().__init__(1.0)

    def now(self) -> datetime:
        return datetime.now(UTC)


def make_clock(speed: float) -> Clock:
    return SystemClock() if speed == 1.0 else Clock(speed)


class CatchUpClock(Clock):
    """Starts at ``start`` (in the past), runs at ``fast`` until simulated time reaches
    ``until``, then at ×1. Inside a hold it runs at ``fine`` (never faster than ``fast``).

    The rate is a function of simulated time; ``now()`` integrates it piecewise from an
    anchor that moves forward at each boundary (a hold starting or ending, the catch-up
    ending). ``sleep`` keeps one heap of sleepers and one loop callback aimed at the
    earliest wake-up or the next boundary, whichever comes first, so a rate change costs
    one reschedule, not a wake-up of every sleeper.
    """

    def __init__(
        self, *, start: datetime, until: datetime, fast: float, fine: float, paused: bool = False
    ) -> None:
        if fast <= 0 or fine <= 0:
            raise ValueError("fast and fine must be positive")
        if until < start:
            raise ValueError("until must not be before start")
        super().__init__(fast, start)
        self.fast = float(fast)
        self.fine = float(min(fine, fast))
        self._until = until.timestamp()
        self._r0 = time.monotonic()
        self._s0 = start.timestamp()
        self._holds: list[tuple[float, float]] = []  # (start, end), heap by start
        self._hold_end: float | None = None
        self._rate = self.fast
        self._next = math.inf
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.caught_up = asyncio.Event()
        self.real_catch_up_s: float | None = None
        self.paused = paused
        self._recompute()

    # ------------------------------------------------------------------ time

    @property
    def until(self) -> datetime:
        return datetime.fromtimestamp(self._until, UTC)

    @property
    def rate(self) -> float:
        """The factor in force right now."""
        self._advance(time.monotonic())
        return self._rate

    def _recompute(self) -> None:
        """Rate and next boundary for the anchor's simulated time ``_s0``."""
        t = self._s0
        if t >= self._until:
            self._rate, self._next, self._hold_end = 1.0, math.inf, None
            self._holds.clear()
            if not self.caught_up.is_set():
                self.real_catch_up_s = self._r0 - self._real0
                self.caught_up.set()
            return
        while self._holds and self._holds[0][0] <= t:
            _, end = heapq.heappop(self._holds)
            if end > t:
                self._hold_end = end if self._hold_end is None else max(self._hold_end, end)
        if self._hold_end is not None and self._hold_end > t:
            self._rate = self.fine
            self._next = min(self._hold_end, self._until)
        else:
            self._hold_end = None
            self._rate = self.fast
            self._next = min(self._holds[0][0] if self._holds else math.inf, self._until)

    def resume(self) -> None:
        """Start a clock made with ``paused=True``: simulated time stood still until now."""
        if self.paused:
            self.paused = False
            self._r0 = self._real0 = time.monotonic()
            self._reschedule()

    def _advance(self, real: float) -> float:
        """Simulated epoch seconds at monotonic ``real``; moves the anchor past boundaries."""
        if self.paused:
            return self._s0
        s = self._s0 + (real - self._r0) * self._rate
        while s >= self._next:
            self._r0 += (self._next - self._s0) / self._rate
            self._s0 = self._next
            self._recompute()
            s = self._s0 + (real - self._r0) * self._rate
        return s

    def _reanchor(self) -> float:
        real = time.monotonic()
        s = self._advance(real)
        if not self.paused:
            self._r0, self._s0 = real, s
        return s

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._advance(time.monotonic()), UTC)

    def real_seconds(self, simulated_seconds: float) -> float:
        return simulated_seconds / self.rate

    def hold(self, start: datetime, end: datetime) -> None:
        s = self._reanchor()
        a, b = max(start.timestamp(), s), end.timestamp()
        if b <= a or a >= self._until:
            return
        heapq.heappush(self._holds, (a, b))
        self._recompute()
        self._reschedule()

    # ------------------------------------------------------------------ sleeping

    async def sleep(self, simulated_seconds: float) -> None:
        if simulated_seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): sleepers of the old one are gone
            self._loop, self._sleepers, self._handle = loop, [], None
        target = self._advance(time.monotonic()) + simulated_seconds
        fut: asyncio.Future[None] = loop.create_future()
        first = not self._sleepers or target < self._sleepers[0][0]
        heapq.heappush(self._sleepers, (target, next(self._seq), fut))
        if first:
            self._reschedule()
        await fut

    def _reschedule(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._loop is None or not self._sleepers or self._loop.is_closed() or self.paused:
            return
        real = time.monotonic()
        s = self._advance(real)
        aim = min(self._sleepers[0][0], self._next)
        delay = max(0.0, (aim - s) / self._rate)
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        s = self._advance(time.monotonic())
        while self._sleepers and self._sleepers[0][0] <= s:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        self._reschedule()

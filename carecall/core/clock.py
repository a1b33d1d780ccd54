"""Time, optionally running faster than real time for demos and tests (``--speed N``).

Every component asks a Clock for "now" and sleeps through it, so one factor speeds up
simulated devices, supervision and escalation timers alike. Production runs at speed 1.

``CatchUpClock`` is the demo's history mode (``carecall demo --history-days D``): it starts
D days in the past, runs at ×fast until simulated time meets the real "now" (which moves
on while it runs), then is the wall clock for good. Human-scale moments (an alarm, an operator's click, an escalation timer)
would be smeared by compression — at ×10,000 one millisecond of processing is ten
simulated seconds — so whoever knows such a moment is coming asks for a ``hold``: the
clock runs at the slower ×fine rate around it. Sleepers are woken by simulated time
whatever the rate does meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from carecall.core.catch_up import hand_over, meeting_point


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

    def hold(self, start: datetime, end: datetime, rate: float | None = None) -> None:
        """Ask for fine time resolution (or ``rate``) between ``start`` and ``end``
        (simulated). Only a CatchUpClock acts on it; at a constant speed there is nothing
        to slow down."""


class SystemClock(Clock):
    """Real time; 'now' is always the wall clock."""

    def __init__(self) -> None:
        super().__init__(1.0)

    def now(self) -> datetime:
        return datetime.now(UTC)


def make_clock(speed: float) -> Clock:
    return SystemClock() if speed == 1.0 else Clock(speed)


_LATEST = datetime(9999, 1, 1, tzinfo=UTC).timestamp()
WAIT_REAIM_S = 0.25  # real seconds: CatchUpClock.wait_caught_up looks again at least this often


class CatchUpClock(Clock):
    """Starts at ``start`` (in the past) and runs at ``fast`` until simulated time meets
    the wall clock, then *is* the wall clock (×1, offset 0). Inside a hold it runs at
    ``fine`` (never faster than ``fast``). With a fixed ``until`` (tests) it goes on at ×1
    from ``until`` instead.

    The real time it chases moves on while it runs (a month of history takes minutes), so
    the end is not a fixed moment: it is where the two meet at the rate in force
    (carecall/core/catch_up.py), worked out again at every rate change. ``now()``
    integrates the rate piecewise from an anchor that moves forward at each boundary (a
    hold starting or ending, the hand-over). ``sleep`` keeps one heap of sleepers and one
    loop callback aimed at the earliest wake-up or the next boundary, whichever comes
    first, so a rate change costs one reschedule, not a wake-up of every sleeper.
    """

    def __init__(
        self,
        *,
        start: datetime,
        until: datetime | None = None,
        fast: float,
        fine: float,
        paused: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if fast <= 0 or fine <= 0:
            raise ValueError("fast and fine must be positive")
        if until is not None and until < start:
            raise ValueError("until must not be before start")
        if until is None and fast <= 1:
            raise ValueError("fast must be above 1 to catch up with the real time")
        super().__init__(fast, start)
        self._monotonic, self._wall = monotonic, wall
        self._real0 = monotonic()
        self.fast = float(fast)
        self.fine = float(min(fine, fast))
        self._fixed_until = None if until is None else until.timestamp()
        self._until = math.inf  # where the catch-up ends at the rate in force (_recompute)
        self._r0 = self._real0
        self._s0 = start.timestamp()
        self._holds: list[tuple[float, float, float]] = []  # (start, end, rate), heap by start
        self._active: list[tuple[float, float]] = []  # (end, rate) of the holds in force
        self._rate = self.fast
        self._next = math.inf
        self._live = False  # handed over: the wall clock from now on
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
        """Where the catch-up ends if the rate in force stays (or ended: the hand-over)."""
        self._advance(self._monotonic())
        return datetime.fromtimestamp(min(self._until, _LATEST), UTC)

    @property
    def rate(self) -> float:
        """The factor in force right now."""
        self._advance(self._monotonic())
        return self._rate

    def _wall_at(self, real: float) -> float:
        """The wall clock's epoch seconds at monotonic ``real`` (read now, so a stepped
        system clock is followed)."""
        return self._wall() - self._monotonic() + real

    def _end_at(self, rate: float) -> float:
        if self._fixed_until is not None:
            return self._fixed_until
        return meeting_point(self._s0, self._wall_at(self._r0), rate)

    def _ended(self) -> bool:
        if self._fixed_until is not None:
            return self._s0 >= self._fixed_until
        return hand_over(self._s0, self._wall_at(self._r0))

    def _recompute(self) -> None:
        """Rate and next boundary for the anchor's simulated time ``_s0``."""
        if self._live:
            return
        t = self._s0
        if not self.paused and self._ended():
            self._hand_over()
            return
        while self._holds and self._holds[0][0] <= t:
            _, end, rate = heapq.heappop(self._holds)
            if end > t:
                self._active.append((end, rate))
        self._active = [(end, rate) for end, rate in self._active if end > t]
        upcoming = self._holds[0][0] if self._holds else math.inf
        if self._active:
            # the slowest hold in force sets the rate; the next boundary is where one ends
            # or a later one (perhaps slower) begins
            self._rate = min(rate for _, rate in self._active)
            self._until = self._end_at(self._rate)
            self._next = min(min(end for end, _ in self._active), upcoming, self._until)
        else:
            self._rate = self.fast
            self._until = self._end_at(self._rate)
            self._next = min(upcoming, self._until)

    def _hand_over(self) -> None:
        self._rate, self._next = 1.0, math.inf
        self._holds.clear()
        self._active.clear()
        self.real_catch_up_s = self._r0 - self._real0
        if self._fixed_until is None:
            # from here on the wall clock itself: the anchor is "now" on both clocks
            self._live = True
            self._r0 = self._monotonic()
            self._s0 = self._until = self._wall()
        else:
            self._until = self._s0
        self.caught_up.set()

    def resume(self) -> None:
        """Start a clock made with ``paused=True``: simulated time stood still until now."""
        if self.paused:
            self.paused = False
            self._r0 = self._real0 = self._monotonic()
            self._recompute()  # the real time moved on while paused: a new meeting point
            self._reschedule()

    def _advance(self, real: float) -> float:
        """Simulated epoch seconds at monotonic ``real``; moves the anchor past boundaries."""
        if self._live:
            return self._wall_at(real)
        if self.paused:
            return self._s0
        s = self._s0 + (real - self._r0) * self._rate
        while s >= self._next:
            self._r0 += (self._next - self._s0) / self._rate
            self._s0 = self._next
            self._recompute()
            if self._live:
                return self._wall_at(real)
            s = self._s0 + (real - self._r0) * self._rate
        return s

    def _reanchor(self) -> float:
        real = self._monotonic()
        s = self._advance(real)
        if not self.paused and not self._live:
            self._r0, self._s0 = real, s
        return s

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._advance(self._monotonic()), UTC)

    def real_seconds(self, simulated_seconds: float) -> float:
        return simulated_seconds / self.rate

    def hold(self, start: datetime, end: datetime, rate: float | None = None) -> None:
        """Run at ``rate`` (default: the fine rate; never faster than ``fast``) from
        ``start`` to ``end`` in simulated time; where holds overlap, the slowest rules."""
        if rate is not None and rate <= 0:
            raise ValueError("a hold's rate must be positive")
        s = self._reanchor()
        a, b = max(start.timestamp(), s), end.timestamp()
        fixed = self._fixed_until
        if b <= a or self.caught_up.is_set() or (fixed is not None and a >= fixed):
            return
        heapq.heappush(self._holds, (a, b, self.fine if rate is None else min(rate, self.fast)))
        self._recompute()
        self._reschedule()

    def hold_for(self, real_s: float, rate: float) -> None:
        """Run at ``rate`` from this very moment for ``real_s`` real seconds. (A hold
        from ``now()`` computed by the caller starts a few microseconds late, which at
        ×10,000 already spans a short hold's whole length.)"""
        if rate <= 0:
            raise ValueError("a hold's rate must be positive")
        if self.caught_up.is_set():
            return
        s = self._reanchor()
        r = min(rate, self.fast)
        heapq.heappush(self._holds, (s, s + r * real_s, r))
        self._recompute()
        self._reschedule()

    async def wait_caught_up(self) -> None:
        """Until the hand-over to the wall clock. The meeting point moves later while a
        hold slows the clock down and earlier again when the hold ends, so the wait is
        aimed at it anew at least every WAIT_REAIM_S real seconds: a sleep aimed at where
        it lay during a hold would run on past the hand-over, at ×1, for as long as the
        hold had pushed it (minutes in the demo's history)."""
        while not self.caught_up.is_set():
            real = self._monotonic()
            ahead = self._until - self._advance(real)  # (advancing past the point hands over)
            if self.caught_up.is_set():
                break
            wait = ahead / self._rate if ahead < math.inf and not self.paused else WAIT_REAIM_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.caught_up.wait(), min(max(wait, 0.001), WAIT_REAIM_S))

    # ------------------------------------------------------------------ sleeping

    async def sleep(self, simulated_seconds: float) -> None:
        if simulated_seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): sleepers of the old one are gone
            self._loop, self._sleepers, self._handle = loop, [], None
        target = self._advance(self._monotonic()) + simulated_seconds
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
        real = self._monotonic()
        s = self._advance(real)
        aim = min(self._sleepers[0][0], self._next)
        delay = max(0.0, (aim - s) / self._rate)
        self._handle = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._handle = None
        s = self._advance(self._monotonic())
        while self._sleepers and self._sleepers[0][0] <= s:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        self._reschedule()


def as_utc(at: datetime) -> datetime:
    """``at`` made timezone-aware: a naive time is taken as UTC (what SQLite hands back
    for a UTC column); an aware one is returned as it is."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)

"""The catch-up clock of the demo's history mode: fast in the past, fine inside holds, ×1
from the real "now" on; sleepers wake by simulated time whatever the rate does."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.clock import CatchUpClock, Clock, SystemClock

DAY = 86400.0


def catch_up(days: float = 1.0, fast: float = 10_000, fine: float = 100) -> CatchUpClock:
    now = datetime.now(UTC)
    return CatchUpClock(start=now - timedelta(days=days), until=now, fast=fast, fine=fine)


def test_starts_in_the_past_and_runs_fast() -> None:
    clock = catch_up(days=1)
    t0 = clock.now()
    assert datetime.now(UTC) - t0 > timedelta(hours=23)
    time.sleep(0.05)
    advanced = (clock.now() - t0).total_seconds()
    assert 400 < advanced < 5000  # ~0.05 s × 10,000 (loaded machines sleep longer)
    assert clock.rate == 10_000


def test_hold_runs_at_the_fine_rate_then_fast_again() -> None:
    clock = catch_up(days=1)
    t0 = clock.now()
    clock.hold(t0, t0 + timedelta(seconds=3))
    assert clock.rate == 100
    time.sleep(0.01)
    inside = (clock.now() - t0).total_seconds()
    assert 0.5 < inside < 3.0
    time.sleep(0.05)  # the hold ends after 0.03 s real; then ×10,000 again
    assert clock.rate == 10_000
    assert (clock.now() - t0).total_seconds() > 3.0 + 50


def test_future_hold_and_bad_holds() -> None:
    clock = catch_up(days=1)
    t0 = clock.now()
    clock.hold(t0 + timedelta(hours=1), t0 + timedelta(hours=1, seconds=10))
    assert clock.rate == 10_000
    clock.hold(t0 - timedelta(hours=2), t0 - timedelta(hours=1))  # over already: ignored
    clock.hold(t0 + timedelta(seconds=5), t0)  # ends before it starts: ignored
    assert clock.rate == 10_000
    time.sleep(0.4)  # 3,600 s at ×10,000 is 0.36 s: now inside the hold
    assert clock.rate == 100
    inside = clock.now() - t0
    assert timedelta(hours=1) <= inside < timedelta(hours=1, seconds=10)


def test_switches_to_real_time_at_until() -> None:
    now = datetime.now(UTC)
    clock = CatchUpClock(start=now - timedelta(seconds=100), until=now, fast=10_000, fine=100)
    time.sleep(0.03)
    clock.now()  # the switch is noticed by whoever looks next
    assert clock.caught_up.is_set()
    assert clock.rate == 1.0
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 0.5
    assert clock.real_catch_up_s is not None and clock.real_catch_up_s < 0.03
    clock.hold(clock.now(), clock.now() + timedelta(seconds=10))  # nothing to slow down any more
    assert clock.rate == 1.0


async def test_sleep_wakes_at_simulated_time_across_rate_changes() -> None:
    clock = catch_up(days=1)
    t0 = clock.now()
    woke: list[datetime] = []

    async def sleeper(s: float) -> None:
        await clock.sleep(s)
        woke.append(clock.now())

    tasks = [asyncio.create_task(sleeper(s)) for s in (600.0, 60.0, 3600.0)]
    await asyncio.sleep(0)
    # A hold in the middle slows the clock: sleepers must not wake early (in simulated
    # time) nor oversleep once it is fast again.
    clock.hold(t0 + timedelta(seconds=30), t0 + timedelta(seconds=32))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    offsets = [(w - t0).total_seconds() for w in woke]
    assert offsets == sorted(offsets)
    for got, want in zip(offsets, (60.0, 600.0, 3600.0), strict=True):
        assert want <= got < want + 60  # a loop turn at ×10,000 is a few simulated seconds


async def test_cancelled_sleeper_does_not_block_others() -> None:
    clock = catch_up(days=1)
    slow = asyncio.create_task(clock.sleep(100.0))
    await asyncio.sleep(0)
    slow.cancel()
    await asyncio.wait_for(clock.sleep(200.0), timeout=2)
    assert slow.cancelled()


def test_plain_clocks_ignore_holds() -> None:
    for clock in (Clock(50.0), SystemClock()):
        t = clock.now()
        clock.hold(t, t + timedelta(seconds=10))
        assert clock.speed in (50.0, 1.0)


def test_rejects_nonsense() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError):
        CatchUpClock(start=now, until=now - timedelta(days=1), fast=10, fine=1)
    with pytest.raises(ValueError):
        CatchUpClock(start=now, until=now, fast=0, fine=1)

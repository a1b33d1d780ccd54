"""The catch-up clock of the demo's history mode: fast in the past, fine inside holds, ×1
from the real "now" on; sleepers wake by simulated time whatever the rate does."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from carecall.core.clock import CatchUpClock, Clock, SystemClock

DAY = 86400.0


def catch_up(days: float = 1.0, fast: float = 10_000, fine: float = 100) -> CatchUpClock:
    now = datetime.now(UTC)
    return CatchUpClock(start=now - timedelta(days=days), until=now, fast=fast, fine=fine)


class FakeTime:
    """A monotonic and a wall clock moved by hand (the wall clock 1.7e9 s ahead)."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.offset = 1.7e9

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return self.mono + self.offset


def fake_catch_up(
    t: FakeTime, *, seconds: float = DAY, fast: float = 10_000, fine: float = 100
) -> CatchUpClock:
    """A catch-up clock on hand-moved time: rates and boundaries checked exactly, whatever
    the machine's load (a real 0.3 ms pause at ×10,000 is 3 simulated seconds)."""
    now = t.wall()
    return CatchUpClock(
        start=datetime.fromtimestamp(now - seconds, UTC),
        until=datetime.fromtimestamp(now, UTC),
        fast=fast,
        fine=fine,
        monotonic=t.monotonic,
        wall=t.wall,
    )


def test_starts_in_the_past_and_runs_fast() -> None:
    t = FakeTime()
    clock = fake_catch_up(t)
    t0 = clock.now()
    assert t.wall() - t0.timestamp() == pytest.approx(DAY)
    t.mono += 0.05
    assert (clock.now() - t0).total_seconds() == pytest.approx(500.0)
    assert clock.rate == 10_000


def test_hold_runs_at_the_fine_rate_then_fast_again() -> None:
    t = FakeTime()
    clock = fake_catch_up(t)
    t0 = clock.now()
    clock.hold(t0, t0 + timedelta(seconds=3))
    assert clock.rate == 100
    t.mono += 0.01
    assert (clock.now() - t0).total_seconds() == pytest.approx(1.0)
    t.mono += 0.05  # the hold ends after 0.03 s real; then x10,000 for the other 0.03 s
    assert clock.rate == 10_000
    assert (clock.now() - t0).total_seconds() == pytest.approx(3.0 + 300.0)


def test_a_slower_hold_inside_a_fine_one_rules_while_it_lasts() -> None:
    """The demo history crawls (×1) while its simulated staff are busy, inside the fine
    holds around their steps: the slowest hold in force sets the rate."""
    t = FakeTime()
    clock = fake_catch_up(t)
    t0 = clock.now()
    clock.hold(t0, t0 + timedelta(seconds=10))  # fine, x100
    clock.hold(t0 + timedelta(seconds=1), t0 + timedelta(seconds=1.5), rate=1)
    assert clock.rate == 100
    t.mono += 0.01  # 1 s at x100: the crawl begins
    assert clock.rate == 1
    t.mono += 0.5  # its 0.5 s at x1
    assert (clock.now() - t0).total_seconds() == pytest.approx(1.5)
    assert clock.rate == 100
    t.mono += 0.085  # the fine hold's other 8.5 s
    assert clock.rate == 10_000
    assert (clock.now() - t0).total_seconds() == pytest.approx(10.0)
    with pytest.raises(ValueError):
        clock.hold(t0, t0 + timedelta(hours=1), rate=0)
    clock.hold(clock.now(), clock.now() + timedelta(seconds=1), rate=1e9)  # never above fast
    assert clock.rate == 10_000
    start = clock.now()
    clock.hold_for(0.2, rate=1)  # from this very moment, 0.2 s real
    assert clock.rate == 1
    t.mono += 0.3
    assert (clock.now() - start).total_seconds() == pytest.approx(0.2 + 0.1 * 10_000)


def test_a_hold_started_by_real_time_on_a_busy_machine() -> None:
    """The same hold on the real clocks: however long the pause before it, the clock never
    runs backwards and ends up fast again (the exact figures are the test above's)."""
    clock = catch_up(days=1)
    t0 = clock.now()
    clock.hold(t0, t0 + timedelta(seconds=3))
    time.sleep(0.05)  # at most 0.03 s real inside the hold
    assert clock.rate == 10_000
    assert (clock.now() - t0).total_seconds() > 3.0


def test_future_hold_and_bad_holds() -> None:
    t = FakeTime()
    clock = fake_catch_up(t)
    t0 = clock.now()
    clock.hold(t0 + timedelta(hours=1), t0 + timedelta(hours=1, seconds=10))
    assert clock.rate == 10_000
    clock.hold(t0 - timedelta(hours=2), t0 - timedelta(hours=1))  # over already: ignored
    clock.hold(t0 + timedelta(seconds=5), t0)  # ends before it starts: ignored
    assert clock.rate == 10_000
    t.mono += 0.4  # 3,600 s at x10,000 is 0.36 s: then 0.04 s at x100 inside the hold
    assert clock.rate == 100
    assert (clock.now() - t0).total_seconds() == pytest.approx(3600.0 + 4.0)
    t.mono += 0.06  # the other 6 s of the hold, then fast
    assert clock.rate == 10_000


def test_switches_to_real_time_at_until() -> None:
    t = FakeTime()
    clock = fake_catch_up(t, seconds=100)
    t.mono += 0.03
    clock.now()  # the switch is noticed by whoever looks next
    assert clock.caught_up.is_set()
    assert clock.rate == 1.0
    assert clock.real_catch_up_s == pytest.approx(0.01)
    # a fixed ``until`` (tests) goes on at x1 from there
    assert clock.now().timestamp() == pytest.approx(t.wall() - 0.01)  # 0.01 s real to get there
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
        # never early; late by at most a few loop turns: at ×10,000 a 30 ms turn on a busy
        # machine is 300 simulated seconds (a full run once saw 85)
        assert want <= got < want + 300


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


def test_a_long_catch_up_hands_over_at_the_true_now_not_where_it_started() -> None:
    """Issue 13: a month of history took 834 s real; the clock ended 834 s behind. The end
    is where simulated time meets the wall clock as it is by then, holds (×50) and all."""
    t = FakeTime()
    start = datetime.fromtimestamp(t.wall() - 2 * DAY, UTC)
    clock = CatchUpClock(start=start, fast=5_000, fine=50, paused=True, monotonic=t.monotonic, wall=t.wall)
    t.mono += 100.0  # devices connecting: simulated time stands still, real time does not
    assert clock.now() == start
    clock.resume()
    steps = 0
    while not clock.caught_up.is_set():
        steps += 1
        assert steps < 100_000
        now = clock.now().timestamp()
        assert now <= t.wall() + 1e-3  # never ahead of the real time
        if steps % 7 == 0:  # work in flight: fine time for 3 simulated seconds
            clock.hold(clock.now(), clock.now() + timedelta(seconds=3))
        t.mono += 0.02
    # a real catch-up many times longer than the 2 days at ×5,000 alone (34.6 s)
    assert clock.real_catch_up_s is not None and clock.real_catch_up_s > 60
    assert clock.now().timestamp() == pytest.approx(t.wall(), abs=1e-6)
    assert clock.rate == 1.0
    t.mono += 3600.0
    assert clock.now().timestamp() == pytest.approx(t.wall(), abs=1e-6)
    t.offset += 5.0  # the system clock is stepped: the demo's clock follows it
    assert clock.now().timestamp() == pytest.approx(t.wall(), abs=1e-6)
    clock.hold(clock.now(), clock.now() + timedelta(seconds=10))  # nothing to slow down
    assert clock.rate == 1.0


def test_the_meeting_point_moves_later_while_a_hold_slows_the_clock() -> None:
    t = FakeTime()
    clock = CatchUpClock(
        start=datetime.fromtimestamp(t.wall() - 1000, UTC),
        fast=11,
        fine=2,
        monotonic=t.monotonic,
        wall=t.wall,
    )
    assert clock.until.timestamp() == pytest.approx(t.wall() + 100)  # 1,000 s behind at ×11
    now = clock.now()
    clock.hold(now, now + timedelta(seconds=20))  # ×2 for 10 real s: the gap shrinks by 10 only
    t.mono += 10
    assert not clock.caught_up.is_set() and clock.rate == 11
    t.mono += 99.0  # (1,000 - 10) / 10 = 99 real s more
    assert clock.now().timestamp() == pytest.approx(t.wall(), abs=1e-6)
    assert clock.caught_up.is_set()
    assert clock.real_catch_up_s == pytest.approx(109.0)


async def test_waiting_for_the_hand_over_ends_at_the_wall_clock() -> None:
    clock = CatchUpClock(start=datetime.now(UTC) - timedelta(seconds=200), fast=2_000, fine=50)
    await asyncio.wait_for(clock.wait_caught_up(), timeout=5)
    assert clock.caught_up.is_set()
    assert abs(clock.now().timestamp() - time.time()) < 0.01
    await asyncio.wait_for(clock.sleep(0.05), timeout=2)  # ×1 sleeping after the hand-over


async def test_waiting_for_the_hand_over_begun_inside_a_hold_ends_when_the_hold_is_over() -> None:
    """The meeting point moves later while a hold slows the clock, and earlier again when
    the hold ends. A wait aimed at where it was while held (200 s past the wall clock here)
    slept on after the hand-over until the wall clock got there: the demo history's
    catch-up then seemed to hang at "1.5 of 1.5 days" for minutes."""
    clock = CatchUpClock(start=datetime.now(UTC) - timedelta(seconds=200), fast=2_000, fine=2)
    now = clock.now()
    clock.hold(now, now + timedelta(seconds=0.4))  # ×2 for 0.2 real s: meeting point 200 s on
    assert clock.until.timestamp() > time.time() + 150
    started = time.monotonic()
    await asyncio.wait_for(clock.wait_caught_up(), timeout=5)
    assert clock.caught_up.is_set()
    assert time.monotonic() - started < 2.0  # 0.2 s held, then 0.1 s at ×2,000
    assert abs(clock.now().timestamp() - time.time()) < 0.01


def test_chasing_the_real_time_needs_a_rate_above_one() -> None:
    with pytest.raises(ValueError):
        CatchUpClock(start=datetime.now(UTC) - timedelta(days=1), fast=1, fine=1)

"""The reject path's rate limits (pure): exact accounting, bounded memory, no device
starving another."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from carecall.core.metrics import OVERFLOW_DEVICE, RejectCounter
from device_gateway.limits import RejectLimiter, TokenBucket


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    b = TokenBucket.full(3, 2.0, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(0.4)  # 0.8 of a token
    assert b.take(0.5)  # one token after 0.5 s at 2/s
    assert not b.take(0.5)
    assert b.level(100.0) == 3  # never above the burst


def test_a_flooding_device_is_summarised_after_its_burst() -> None:
    lim = RejectLimiter(burst=5, per_s=1.0, now=0.0)
    kept = [lim.admit("d1", "not_json", "t/d1/events", 10, now=i / 1000) for i in range(1000)]
    assert sum(kept) == 5 + 0  # one second has not passed yet
    [s] = lim.drain()
    assert (s.device_id, s.reason, s.count, s.largest) == ("d1", "not_json", 995, 10)
    assert lim.drain() == []
    assert lim.admit("d1", "not_json", "t", 1, now=2.0), "the rate refills the bucket"


def test_one_device_flooding_does_not_use_up_another_devices_allowance() -> None:
    lim = RejectLimiter(burst=5, per_s=1.0, global_burst=100, global_per_s=10.0, now=0.0)
    for i in range(10_000):
        lim.admit("flooder", "not_json", "t", 1, now=i / 10_000)
    assert lim.admit("quiet", "bad_value", "t", 1, now=1.0)


def test_summaries_per_device_and_reason_add_up_exactly() -> None:
    lim = RejectLimiter(burst=2, per_s=0.5, now=0.0)
    sent = 0
    kept = 0
    for i in range(3000):
        dev = f"d{i % 3}"
        reason = ("not_json", "bad_value")[i % 2]
        kept += lim.admit(dev, reason, "t", i, now=i / 100)
        sent += 1
    summaries = lim.drain()
    assert kept + sum(s.count for s in summaries) == sent
    assert len({(s.device_id, s.reason) for s in summaries}) == len(summaries) <= 6


def test_memory_stays_bounded_whatever_the_number_of_devices() -> None:
    lim = RejectLimiter(burst=1, per_s=0.001, max_devices=100, max_summaries=50, now=0.0)
    total = 0
    kept = 0
    for i in range(20_000):  # a spray of made-up device ids, each twice
        for _ in range(2):
            kept += lim.admit(f"fake-{i}", "unknown_device", "t", 5, now=i * 1e-4)
            total += 1
        assert lim.tracked_devices <= 100 and lim.pending_summaries <= 51
    summaries = lim.drain()
    assert kept + sum(s.count for s in summaries) == total, "still exact"
    assert any(s.device_id is None for s in summaries), "past the limit: one row per reason"


def test_restore_merges_back_what_could_not_be_written() -> None:
    lim = RejectLimiter(burst=1, per_s=1.0, now=0.0)
    for i in range(10):
        lim.admit("d", "not_json", "t", 1, now=0.0 + i * 1e-3)
    first = lim.drain()
    lim.admit("d", "not_json", "t", 1, now=0.1)
    lim.restore(first)
    [s] = lim.drain()
    assert s.count == 9 + 1


def test_forget_gives_a_device_a_fresh_allowance() -> None:
    lim = RejectLimiter(burst=1, per_s=0.001, now=0.0)
    assert lim.admit("d", "disabled_device", "t", 1, now=0.0)
    assert not lim.admit("d", "disabled_device", "t", 1, now=0.1)
    lim.forget("d")
    assert lim.admit("d", "disabled_device", "t", 1, now=0.2)


def test_limits_must_let_something_through() -> None:
    with pytest.raises(ValueError):
        RejectLimiter(burst=0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", None]), st.sampled_from(["not_json", "too_deep"])),
        max_size=400,
    ),
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=1, max_value=3),
)
@hsettings(max_examples=100, deadline=None)
def test_every_rejection_is_kept_or_summarised(
    seq: list[tuple[str | None, str]], burst: int, max_summaries: int
) -> None:
    lim = RejectLimiter(burst=burst, per_s=1.0, max_devices=2, max_summaries=max_summaries, now=0.0)
    kept = sum(lim.admit(d, r, "t", 1, now=i * 0.01) for i, (d, r) in enumerate(seq))
    assert kept + sum(s.count for s in lim.drain()) == len(seq)


def test_reject_counter_is_exact_and_bounded() -> None:
    c = RejectCounter(max_keys=10)
    for i in range(1000):
        c.add(f"fake-{i}", "unknown_device")
    assert c.total == 1000 and c.by_reason() == {"unknown_device": 1000}
    assert len(c.by_device_reason) <= 11
    assert c.by_device_reason[(OVERFLOW_DEVICE, "unknown_device")] == 990

"""Where the demo's history clock meets the real time (pure arithmetic)."""

from __future__ import annotations

import math

import pytest

from carecall.core.catch_up import MEET_SLACK_S, hand_over, meeting_point


def test_meets_where_the_gap_is_closed_at_rate_minus_one() -> None:
    # 1,000 s behind at ×11: the gap closes 10 s per real second, so after 100 real s,
    # when the wall clock reads 1,100 and the simulated one 0 + 11 × 100
    assert meeting_point(0.0, 1000.0, 11.0) == pytest.approx(1100.0)
    # a day behind at ×10,000: the wall clock moves on ~8.6 s meanwhile
    assert meeting_point(0.0, 86400.0, 10_000.0) == pytest.approx(86400.0 * 10_000 / 9_999)


def test_at_or_ahead_of_the_wall_clock_it_is_there_already() -> None:
    assert meeting_point(500.0, 500.0, 50.0) == 500.0
    assert meeting_point(501.0, 500.0, 50.0) == 501.0


def test_never_meets_at_one_or_slower() -> None:
    assert meeting_point(0.0, 10.0, 1.0) == math.inf
    assert meeting_point(0.0, 10.0, 0.5) == math.inf
    with pytest.raises(ValueError):
        meeting_point(0.0, 10.0, 0.0)


def test_hand_over_only_when_simulated_time_has_reached_the_wall_clock() -> None:
    assert hand_over(1000.0, 1000.0)
    assert hand_over(1000.0 - MEET_SLACK_S / 2, 1000.0)  # float noise between two readings
    assert hand_over(1001.0, 1000.0)
    assert not hand_over(999.0, 1000.0)
    assert not hand_over(1000.0 - 2 * MEET_SLACK_S, 1000.0)

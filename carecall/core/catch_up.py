"""Where a catch-up clock meets the real time (pure arithmetic, no clocks read here).

A demo's history runs simulated time at a rate above ×1 from a start in the past; the
real time it chases moves on at ×1 meanwhile. The history ends when the two meet, and
from that moment the clock *is* the wall clock (offset 0), whatever the catch-up took.
"""

from __future__ import annotations

import math

# Floating-point slack when comparing simulated and wall epoch seconds: two readings of
# the wall clock a few microseconds apart must not keep the hand-over from happening.
MEET_SLACK_S = 0.001


def meeting_point(sim_s: float, wall_s: float, rate: float) -> float:
    """The simulated epoch second at which a clock at ``sim_s`` running at ``rate`` meets
    a wall clock at ``wall_s`` running at ×1; ``math.inf`` when it never does
    (``rate`` <= 1 and behind); ``sim_s`` when it is already there."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    gap = wall_s - sim_s
    if gap <= 0:
        return sim_s
    if rate <= 1:
        return math.inf
    return sim_s + rate * gap / (rate - 1.0)


def hand_over(sim_s: float, wall_s: float) -> bool:
    """Whether a catch-up clock at ``sim_s`` switches to the wall clock (at ``wall_s``)."""
    return sim_s >= wall_s - MEET_SLACK_S

"""The stall decision (dispatcher/health/stall.py): pure, so every edge is a plain assertion."""

from __future__ import annotations

import pytest

from dispatcher.health import stall as st

LIMITS = st.Thresholds(intake_s=15, timers_s=10, acks_s=30, notifications_s=30, loop_s=30, watchdog_loop_s=120)


def parts(obs: st.Observation, limits: st.Thresholds = LIMITS) -> list[str]:
    return [s.part for s in st.find_stalls(obs, limits)]


def test_nothing_waiting_is_no_stall() -> None:
    assert st.find_stalls(st.Observation(), LIMITS) == []
    idle = {"intake": 1.0, "timers": 0.2, "outbox": 0.9, "watchdog": 29.0}
    assert st.find_stalls(st.Observation(loop_idle_s=idle), LIMITS) == []


@pytest.mark.parametrize(
    ("field", "part", "limit"),
    [
        ("intake_wait_s", "intake", 15),
        ("timer_late_s", "timers", 10),
        ("ack_wait_s", "acks", 30),
        ("notification_late_s", "notifications", 30),
    ],
)
def test_each_database_part_stalls_only_past_its_limit(field: str, part: str, limit: float) -> None:
    assert parts(st.Observation(**{field: limit})) == []  # at the limit: still fine
    assert parts(st.Observation(**{field: limit - 0.1})) == []
    [found] = st.find_stalls(st.Observation(**{field: limit + 0.5}), LIMITS)
    assert found.part == part
    assert found.age_s == limit + 0.5 and found.limit_s == limit
    assert f"limit {limit} s" in found.reason


def test_every_stalled_part_is_named_in_a_fixed_order() -> None:
    obs = st.Observation(
        intake_wait_s=40,
        timer_late_s=11,
        ack_wait_s=31,
        notification_late_s=300,
        loop_idle_s={"watchdog": 500, "outbox": 31, "intake": 2, "timers": 60},
    )
    assert parts(obs) == ["intake", "timers", "acks", "notifications", "loop:timers", "loop:outbox", "loop:watchdog"]
    by_part = {s.part: s for s in st.find_stalls(obs, LIMITS)}
    assert by_part["intake"].kind == "event_waiting"
    assert by_part["intake"].reason == "a stored event has waited 40 s to become a call (limit 15 s)"
    assert by_part["loop:timers"].kind == "loop_idle"
    assert "timers loop" in by_part["loop:timers"].reason


def test_the_watchdog_loop_has_its_own_longer_limit() -> None:
    # it runs every 30 s: 60 s without a round is normal for it, not for the intake loop
    assert parts(st.Observation(loop_idle_s={"watchdog": 60, "intake": 60})) == ["loop:intake"]
    assert parts(st.Observation(loop_idle_s={"watchdog": 121})) == ["loop:watchdog"]


def test_an_unknown_loop_is_still_watched_with_the_loop_limit() -> None:
    assert parts(st.Observation(loop_idle_s={"mqtt": 31})) == ["loop:mqtt"]


def test_an_unreachable_database_is_a_stall_and_hides_nothing_of_the_loops() -> None:
    obs = st.Observation(intake_wait_s=99, database_error="OperationalError: refused", loop_idle_s={"intake": 45})
    stalls = st.find_stalls(obs, LIMITS)
    assert [s.part for s in stalls] == ["database", "loop:intake"]
    assert "refused" in stalls[0].reason
    # the lags cannot be trusted when the database did not answer: not reported as such
    assert "intake" not in [s.part for s in stalls]


def test_negative_or_missing_lags_are_not_stalls() -> None:
    assert parts(st.Observation(timer_late_s=-100)) == []
    assert parts(st.Observation(intake_wait_s=None, ack_wait_s=None)) == []


def test_thresholds_are_honoured_as_given() -> None:
    tight = st.Thresholds(intake_s=1, timers_s=1, acks_s=1, notifications_s=1, loop_s=1, watchdog_loop_s=1)
    assert parts(st.Observation(intake_wait_s=2, loop_idle_s={"watchdog": 2}), tight) == ["intake", "loop:watchdog"]


def test_monitor_silence() -> None:
    assert st.monitor_silent(checked_ago_s=3, started_ago_s=100, limit_s=15) is None
    late = st.monitor_silent(checked_ago_s=16, started_ago_s=100, limit_s=15)
    assert late is not None and late.part == "monitor" and late.age_s == 16
    # never checked: measured from the start, with the same grace
    assert st.monitor_silent(checked_ago_s=None, started_ago_s=10, limit_s=15) is None
    never = st.monitor_silent(checked_ago_s=None, started_ago_s=20, limit_s=15)
    assert never is not None and never.age_s == 20


def test_an_episode_closes_only_when_nobody_confirmed_it_for_the_hold() -> None:
    recorded = [
        st.Recorded("intake", confirmed_ago_s=2),  # another copy still sees it
        st.Recorded("timers", confirmed_ago_s=7),  # nobody for 7 s
        st.Recorded("acks", confirmed_ago_s=50),  # but we see it ourselves right now
        st.Recorded("loop:outbox@dispatcher-2", confirmed_ago_s=float("inf")),  # its copy is gone
    ]
    assert st.clearable(recorded, still_stalled={"acks"}, hold_s=6) == ["loop:outbox@dispatcher-2", "timers"]
    assert st.clearable(recorded, still_stalled=set(), hold_s=60) == ["loop:outbox@dispatcher-2"]
    assert st.clearable([], still_stalled={"intake"}, hold_s=6) == []


def test_episode_keys() -> None:
    # the database is the same for every copy: one episode whoever sees it
    assert st.episode_key("intake", "dispatcher-1") == st.episode_key("intake", "serve-2") == "intake"
    # a loop is one copy's own
    assert st.episode_key("loop:intake", "dispatcher-1") == "loop:intake@dispatcher-1"
    assert st.is_loop_part("loop:timers") and not st.is_loop_part("timers")

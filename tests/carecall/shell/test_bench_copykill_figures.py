"""The copy-kill phase's pure figures: windows around the kill, lost alarms, the longest
wait, the dead copy's timers, and the verdicts against issue 15's 5 s."""

from __future__ import annotations

import pytest

from carecall.shell.bench_copykill_figures import (
    TimerRow,
    Wait,
    kill_figures,
    ratio,
    split_at_kill,
    summary,
    timer_figures,
    timer_verdict,
    wait_verdict,
)


def test_summary_is_nearest_rank_and_empty_is_none() -> None:
    assert summary([]) == {"count": 0, "p50": None, "p99": None, "max": None}
    s = summary([float(v) for v in range(100, 0, -1)])  # 1..100, unsorted
    assert s == {"count": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}


def test_before_is_sent_and_answered_before_the_kill_the_rest_is_after() -> None:
    done_before = Wait(1.0, 1.5)
    in_flight = Wait(9.0, 12.0)  # sent before the kill at 10, answered after
    never = Wait(9.5, None)  # sent before, never answered
    later = Wait(11.0, 11.2)
    before, after = split_at_kill([done_before, in_flight, never, later], 10.0)
    assert before == [done_before]
    assert after == [in_flight, never, later]


def test_kill_figures_count_lost_in_flight_and_the_longest_wait() -> None:
    waits = [Wait(1.0, 1.1), Wait(2.0, 2.3), Wait(9.0, 12.0), Wait(9.5, None), Wait(11.0, 11.2)]
    fig = kill_figures(waits, 10.0)
    assert fig["sent"] == 5
    assert fig["answered"] == 4
    assert fig["lost"] == 1
    assert fig["in_flight_at_kill"] == 2
    assert fig["sent_after_kill"] == 1
    assert fig["before_ms"]["count"] == 2 and fig["before_ms"]["max"] == pytest.approx(300.0)
    assert fig["after_ms"]["count"] == 2 and fig["after_ms"]["max"] == pytest.approx(3000.0)
    assert fig["longest_ms"] == pytest.approx(3000.0)
    # after ÷ before: 3,000 ms against 300 ms
    assert fig["ratio_max"] == pytest.approx(10.0)


def test_kill_figures_without_answers_have_no_longest_wait() -> None:
    fig = kill_figures([Wait(1.0, None)], 0.5)
    assert fig["lost"] == 1 and fig["longest_ms"] is None and fig["ratio_p50"] is None


def test_ratio_needs_a_positive_reference() -> None:
    assert ratio(10, 4) == 2.5
    assert ratio(None, 4) is None
    assert ratio(4, None) is None
    assert ratio(4, 0) is None


@pytest.mark.parametrize(
    ("waits", "victim_handled", "verdict"),
    [
        ([Wait(1.0, 1.1), Wait(11.0, 13.0)], 5, "met"),  # 2 s after the kill at 10
        ([Wait(1.0, 1.1), Wait(11.0, 16.5)], 5, "not met"),  # 5.5 s: over 5 s
        ([Wait(1.0, 1.1), Wait(11.0, 12.0), Wait(11.5, None)], 5, "not met"),  # one lost
        ([Wait(1.0, 1.1), Wait(11.0, 12.0)], 0, "not measured"),  # the killed copy had no share
        ([Wait(1.0, 1.1), Wait(2.0, 2.1)], 5, "not measured"),  # nothing sent after the kill
    ],
)
def test_wait_verdict_against_five_seconds(waits: list[Wait], victim_handled: int, verdict: str) -> None:
    assert wait_verdict(kill_figures(waits, 10.0), victim_handled) == verdict


def test_exactly_five_seconds_meets_the_goal() -> None:
    fig = kill_figures([Wait(1.0, 1.1), Wait(11.0, 16.0)], 10.0)
    assert wait_verdict(fig, 1) == "met"


def rows() -> list[TimerRow]:
    return [
        TimerRow(due=100.0, fired=100.05, opened_by="dispatcher-a"),  # baseline, any copy
        TimerRow(due=101.0, fired=101.25, opened_by="dispatcher-b"),  # baseline
        TimerRow(due=109.0, fired=110.5, opened_by="dispatcher-b"),  # due before, fired after the kill
        TimerRow(due=109.5, fired=None, opened_by="dispatcher-a"),  # the survivor's: not judged
        TimerRow(due=120.0, fired=120.02, opened_by="dispatcher-b"),  # the dead copy's reminder
        TimerRow(due=125.0, fired=None, opened_by="dispatcher-b"),  # never fired
        TimerRow(due=140.0, fired=None, opened_by="dispatcher-b"),  # past the window
    ]


def test_timers_of_the_dead_copy_due_while_it_was_dead() -> None:
    fig = timer_figures(rows(), killed="dispatcher-b", kill_at=110.0, window_s=20.0)
    # the one due before the kill but fired after, the reminder, the unfired one
    assert fig["due_after_kill"] == 3
    assert fig["fired"] == 2
    assert fig["missed"] == 1
    assert fig["late_ms"]["max"] == pytest.approx(1500.0)
    assert fig["before_fired"] == 2
    assert fig["before_late_ms"]["max"] == pytest.approx(250.0)
    assert timer_verdict(fig) == "not met"


def test_timer_verdict_met_and_not_measured() -> None:
    ok = [r for r in rows() if r.fired is not None]
    fig = timer_figures(ok, killed="dispatcher-b", kill_at=110.0, window_s=20.0)
    assert fig["missed"] == 0 and timer_verdict(fig) == "met"
    assert timer_verdict(fig, goal_ms=1000.0) == "not met"  # 1.5 s late
    none = timer_figures(ok, killed="dispatcher-x", kill_at=110.0, window_s=20.0)
    assert none["due_after_kill"] == 0 and timer_verdict(none) == "not measured"

"""The targets ``carecall bench`` judges (issue 15's table, issue 6's ingest ratio): pure."""

from __future__ import annotations

from typing import Any

import pytest

from carecall.shell.bench_verdicts import GOALS, MET, MISSED, NOT_JUDGED, judge, missed_ids, window_timers

ALL = ("ingest", "quiet", "contended", "flood", "copy-kill")

# a real-target full run within every goal, nothing lost
GOOD: dict[str, Any] = {
    "ingest_ratio": 0.8,
    "alarm_ack_p99_ms": 15.0,
    "alarm_unacked": 0,
    "alarm_telemetry_behind_msg_s": 5000.0,
    "console_p99_ms": 90.0,
    "console_missing": 0,
    "timer_late_p99_ms": 60.0,
    "storm_ack_p99_ms": 300.0,
    "storm_lost": 0,
    "contended_alarm_ack_p99_ms": 80.0,
    "contended_alarm_unacked": 0,
    "contended_alarm_telemetry_behind_msg_s": 5000.0,
    "contended_console_p99_ms": 200.0,
    "contended_console_missing": 0,
    "contended_timer_late_p99_ms": 400.0,
    "contended_timers_unfired": 0,
    "contended_storm_ack_p99_ms": 1500.0,
    "contended_storm_lost": 0,
    "flood_ack_p99_ms": 12.0,
    "flood_unacked": 0,
    "flood_own_sos_unacked": 0,
    "copykill_gateway_longest_ms": 2000.0,
    "copykill_gateway_lost": 0,
    "copykill_gateway_measured": True,
    "copykill_dispatcher_longest_ms": 3000.0,
    "copykill_dispatcher_lost": 0,
    "copykill_dispatcher_measured": True,
    "copykill_timers_late_max_ms": 40.0,
    "copykill_timers_missed": 0,
    "copykill_timers_measured": True,
}


def by_id(figures: dict[str, Any], **kw: Any) -> dict[str, Any]:
    opts: dict[str, Any] = {"target": "real", "ran": ALL, "quick": False, "baseline_p99_ms": 2.0}
    opts.update(kw)
    return {v.id: v for v in judge(figures, **opts)}


def test_the_goals_are_the_issues_table() -> None:
    goals = {g.id: (g.key, g.phase, g.op, g.goal, g.targets) for g in GOALS}
    assert goals["alarm_ack"] == ("alarm_ack_p99_ms", "quiet", "<=", 20.0, ("real",))
    assert goals["console"] == ("console_p99_ms", "quiet", "<=", 100.0, ("real",))
    assert goals["timers"] == ("timer_late_p99_ms", "quiet", "<=", 100.0, ("real",))
    assert goals["storm"] == ("storm_ack_p99_ms", "quiet", "<=", 500.0, ("real",))
    assert goals["flood"] == ("flood_ack_p99_ms", "flood", "<=", 20.0, ("real",))
    assert goals["copykill_gateway"] == ("copykill_gateway_longest_ms", "copy-kill", "<=", 5000.0, ("real",))
    assert goals["embedded_storm"] == ("storm_ack_p99_ms", "quiet", "<=", 5000.0, ("embedded",))
    assert goals["contended_alarm_ack"][3] == 100.0
    assert goals["contended_console"][3] == 250.0
    assert goals["contended_timers"][3] == 500.0
    assert goals["contended_storm"][3] == 2000.0
    assert goals["ingest_ratio"] == ("ingest_ratio", "ingest", ">=", 0.5, ("embedded", "real"))
    assert len(goals) == len(GOALS), "goal ids are unique"


def test_a_run_within_every_goal_meets_them_all() -> None:
    got = by_id(GOOD)
    assert {v.status for k, v in got.items() if k != "embedded_storm"} == {MET}
    assert got["embedded_storm"].status == NOT_JUDGED  # the embedded target's own row
    assert missed_ids(got.values()) == []


def test_over_the_goal_is_missed_with_the_ratio_to_the_baseline_p99() -> None:
    got = by_id({**GOOD, "console_p99_ms": 130.0, "contended_storm_ack_p99_ms": 2100.0})
    assert got["console"].status == MISSED and got["console"].reason == "over 100 ms"
    assert got["console"].ratio == 65.0  # 130 ms ÷ the broker's 2 ms
    assert got["contended_storm"].status == MISSED
    assert missed_ids(got.values()) == ["console", "contended_storm"]
    # the same figure, different goals per phase: 200 ms meets contended, not quiet
    got = by_id({**GOOD, "console_p99_ms": 200.0, "contended_console_p99_ms": 200.0})
    assert (got["console"].status, got["contended_console"].status) == (MISSED, MET)


def test_a_latency_with_anything_lost_beside_it_is_missed() -> None:
    got = by_id({**GOOD, "console_missing": 3, "storm_lost": 1, "flood_own_sos_unacked": 1})
    assert got["console"].status == MISSED and "console_missing 3" in got["console"].reason
    assert got["storm"].status == MISSED and "storm_lost 1" in got["storm"].reason
    assert got["flood"].status == MISSED and "flood_own_sos_unacked 1" in got["flood"].reason
    # a count that was not measured is no proof that nothing was lost
    got = by_id({k: v for k, v in GOOD.items() if k != "contended_timers_unfired"})
    assert got["contended_timers"].status == MISSED


def test_a_figure_that_could_not_be_measured_is_missed() -> None:
    got = by_id({**GOOD, "console_p99_ms": None, "copykill_timers_late_max_ms": None})
    assert got["console"].status == MISSED and got["console"].reason == "no figure"
    assert got["console"].ratio is None
    assert got["copykill_timers"].status == MISSED


def test_fewer_readings_behind_than_the_issues_5000_proves_a_miss_not_a_pass() -> None:
    light = {**GOOD, "alarm_telemetry_behind_msg_s": 2800.0}
    assert by_id(light)["alarm_ack"].status == NOT_JUDGED
    assert "2,800 readings/s" in by_id(light)["alarm_ack"].reason
    assert by_id({**light, "alarm_ack_p99_ms": 40.0})["alarm_ack"].status == MISSED


def test_a_quick_run_judges_nothing() -> None:
    got = by_id({**GOOD, "console_p99_ms": 9000.0, "storm_lost": 5}, quick=True)
    assert {v.status for v in got.values()} == {NOT_JUDGED}
    assert {v.reason for v in got.values() if v.id != "embedded_storm"} == {"quick run"}
    assert missed_ids(got.values()) == []


def test_each_target_is_judged_on_its_own_rows() -> None:
    embedded = {
        "ingest_ratio": 0.9,
        "alarm_ack_p99_ms": 900.0,
        "alarm_unacked": 0,
        "storm_ack_p99_ms": 4000.0,
        "storm_lost": 0,
    }
    got = by_id(embedded, target="embedded", ran=("ingest", "quiet"))
    assert got["embedded_storm"].status == MET
    assert got["storm"].status == NOT_JUDGED and "real target" in got["storm"].reason
    assert got["alarm_ack"].status == NOT_JUDGED
    assert got["ingest_ratio"].status == MET
    got = by_id({**embedded, "storm_lost": 2}, target="embedded", ran=("quiet",))
    assert got["embedded_storm"].status == MISSED and "ingest_ratio" not in got


def test_only_the_phases_that_ran_are_listed() -> None:
    got = by_id(GOOD, ran=("contended", "flood"))
    assert {v.phase for v in got.values()} == {"contended", "flood"}
    assert "ingest_ratio" not in by_id(GOOD, ran=("copy-kill",))
    assert by_id({"ingest_ratio": 0.2}, ran=("ingest",))["ingest_ratio"].status == MISSED


def test_a_copy_kill_leg_the_phase_could_not_measure_is_not_judged() -> None:
    got = by_id({**GOOD, "copykill_dispatcher_measured": False, "copykill_dispatcher_longest_ms": 9e3})
    assert got["copykill_dispatcher"].status == NOT_JUDGED
    assert got["copykill_gateway"].status == MET


@pytest.mark.parametrize("baseline", [None, 0.0])
def test_no_ratio_without_a_baseline(baseline: float | None) -> None:
    assert by_id(GOOD, baseline_p99_ms=baseline)["console"].ratio is None
    assert by_id(GOOD)["ingest_ratio"].ratio is None  # not a latency


def test_window_timers_counts_those_due_in_the_window() -> None:
    rows = [(9.0, 9.1), (10.0, 10.05), (12.0, None), (15.0, 15.5), (15.1, 15.2)]
    late, due, unfired = window_timers(rows, 10.0, 15.0)
    assert [round(x) for x in late] == [50, 500] and due == 3 and unfired == 1
    assert window_timers([], 0, 1) == ([], 0, 0)

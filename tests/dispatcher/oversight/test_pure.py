"""The pure parts: percentiles, target states, call moments, local periods, coverage and
its what-if, offline hours, targets file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from dispatcher.calls.routing import RoutingConfig
from dispatcher.oversight.coverage import CoverageHome, CoverageStation, by_street, coverage, what_if
from dispatcher.oversight.figures import (
    AuditFact,
    CallInfo,
    CallMarks,
    Period,
    call_figures,
    from_us,
    group_rows,
    in_period,
    marks_from_rows,
    nearest_rank,
    target_state,
    to_us,
)
from dispatcher.oversight.health import offline_seconds
from dispatcher.oversight.targets import Targets, TargetsError
from dispatcher.oversight.targets_file import load_targets

T = datetime(2026, 11, 30, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai


def test_nearest_rank_on_one_to_twenty() -> None:
    values = [float(v) for v in range(1, 21)]
    assert [nearest_rank(values, p) for p in (50, 90, 95, 99, 100)] == [10.0, 18.0, 19.0, 20.0, 20.0]
    assert nearest_rank([7.0], 50) == 7.0 and nearest_rank([], 90) is None
    assert nearest_rank([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # a value that happened, never 2.5
    with pytest.raises(ValueError):
        nearest_rank(values, 0)


def test_target_state() -> None:
    assert target_state(60.0, 60, None) is True
    assert target_state(60.001, 60, 100) is False
    assert target_state(None, 60, 61) is False  # waited past it unanswered
    assert target_state(None, 60, 20) is None  # ended (or still running) inside it
    assert target_state(None, 60, None) is None


def test_marks_take_first_rows_and_operator_close_as_answer() -> None:
    rows = [
        AuditFact(T + timedelta(seconds=5), "event_received"),
        AuditFact(T, "event_received"),
        AuditFact(T + timedelta(seconds=1), "call_opened"),
        AuditFact(T + timedelta(seconds=30), "escalated", detail={"to": "street"}),
        AuditFact(T + timedelta(seconds=50), "escalated", detail={"to": "county"}),
        AuditFact(T + timedelta(seconds=90), "resolved", actor="user:op"),
    ]
    m = marks_from_rows(rows)
    assert m.received_us == to_us(T) and m.acknowledged_us == to_us(T + timedelta(seconds=90))
    assert (m.escalations, m.escalated_to_county, m.closed_us) == (2, True, to_us(T + timedelta(seconds=90)))
    restored = marks_from_rows(
        [AuditFact(T, "event_received"), AuditFact(T, "restored", actor="dispatcher:1")]
    )
    assert restored.acknowledged_us is None and restored.closed_us == to_us(T)
    assert restored.start == T and from_us(to_us(T)) == T


def _info(cid: int, tz: str = "Asia/Shanghai", area: str = "urban") -> CallInfo:
    return CallInfo(
        cid,
        "cm1",
        "站",
        "h1",
        "cm1",
        "st1",
        "街",
        "c",
        "县",
        tz,
        area,
        "P1",
        "sos",
        "emergency",
        "resolved",
        None,
    )


def test_calls_belong_to_the_local_day_and_month_they_started() -> None:
    targets = Targets()
    a = call_figures(_info(1), CallMarks.of(T, closed_at=T + timedelta(seconds=10)), targets, T)
    b = call_figures(
        _info(2), CallMarks.of(T + timedelta(hours=1), closed_at=T + timedelta(hours=2)), targets, T
    )
    c = call_figures(_info(3, tz="UTC"), CallMarks.of(T + timedelta(hours=1)), targets, T)
    assert [r["key"] for r in group_rows([a, b, c], "month", targets)] == ["2026-11", "2026-12"]
    assert [(r["key"], r["calls"]) for r in group_rows([a, b, c], "day", targets)] == [
        ("2026-11-30", 2),
        ("2026-12-01", 1),
    ]
    assert [f.info.call_id for f in in_period([a, b, c], Period(date(2026, 11, 1), date(2026, 11, 30)))] == [
        1,
        3,
    ]
    assert group_rows([a], "week", targets)[0]["key"] == "2026-W49"
    assert group_rows([a], "hour", targets)[0]["key"] == "23"


def test_arrival_limit_by_area_and_only_for_dispatched_calls() -> None:
    targets = Targets()
    disp = T + timedelta(seconds=30)
    rural = call_figures(
        _info(1, area="rural"),
        CallMarks.of(T, dispatched_at=disp, on_scene_at=T + timedelta(minutes=29)),
        targets,
        T,
    )
    urban = call_figures(
        _info(2), CallMarks.of(T, dispatched_at=disp, on_scene_at=T + timedelta(minutes=29)), targets, T
    )
    phone = call_figures(_info(3), CallMarks.of(T, closed_at=T + timedelta(hours=1)), targets, T)
    assert (rural.arrival_met, urban.arrival_met, phone.arrival_met) == (True, False, None)
    row = group_rows([rural, urban, phone], "county", targets)[0]
    assert (row["arrival_within_limit_met"], row["arrival_within_limit_eligible"]) == (1, 2)
    assert row["arrival_within_limit_target_met"] is False


def test_answer_target_met_exactly_at_the_share() -> None:
    """39 of 40 within 60 s is exactly 97.5 %: the target is met, not missed by rounding."""
    targets = Targets()
    figs = [
        call_figures(
            _info(i), CallMarks.of(T, acknowledged_at=T + timedelta(seconds=10 if i else 70)), targets, T
        )
        for i in range(40)
    ]
    row = group_rows(figs, "station", targets)[0]
    assert (row["answer_within_60s_met"], row["answer_within_60s_eligible"]) == (39, 40)
    assert row["answer_within_60s_pct"] == 97.5 and row["answer_within_60s_target_met"] is True


HOMES = [
    CoverageHome("a", "cm1", "st1", "一街", 32.0, 112.0, "urban"),
    CoverageHome("b", "cm2", "st1", "一街", 32.0, 112.1, "urban"),  # ~9.4 km east
    CoverageHome("c", "cm2", "st2", "二街", 32.0, 112.2, "rural"),  # 9.4 km from cm2, 18.9 from cm1
]
STATIONS = [
    CoverageStation("cm1", "站1", "community", 32.0, 112.0, 1),
    CoverageStation("cm2", "站2", "community", 32.0, 112.1, 0),
]


def test_coverage_and_what_if() -> None:
    cfg = RoutingConfig()
    limits = {"urban": 15.0, "rural": 30.0}
    now = coverage(HOMES, STATIONS, cfg, limits)
    # b: 9.44 km × 1.3 ÷ 20 km/h ≈ 36.8 min from cm1; c (rural): 18.9 km × 1.3 ÷ 40 ≈ 36.8 min
    assert [(c.home.id, c.nearest_station_id, c.covered) for c in now] == [
        ("a", "cm1", True),
        ("b", "cm1", False),
        ("c", "cm1", False),
    ]
    assert [(r["street_id"], r["covered"], r["outside_homes"]) for r in by_street(now)] == [
        ("st1", 1, "b"),
        ("st2", 0, "c"),
    ]
    result, after = what_if(HOMES, STATIONS, cfg, limits, station_id="cm2", add=1)
    assert result.newly_covered == ("b", "c") and result.newly_uncovered == ()
    assert [c.nearest_station_id for c in after] == ["cm1", "cm2", "cm2"]
    assert (result.covered_before, result.covered_after) == (1, 3)
    assert result.nearest_changed == ("b", "c")
    gone, _ = what_if(HOMES, STATIONS, cfg, limits, station_id="cm1", add=-1)
    assert gone.newly_uncovered == ("a",) and gone.covered_after == 0
    with pytest.raises(ValueError):
        what_if(HOMES, STATIONS, cfg, limits, station_id="nope", add=1)


def test_offline_seconds() -> None:
    start, end = T, T + timedelta(hours=10)
    changes = [
        (T + timedelta(hours=1), "offline"),
        (T + timedelta(hours=2), "offline"),  # a second copy's record changes nothing
        (T + timedelta(hours=3), "online"),
        (T + timedelta(hours=9), "offline"),
    ]
    assert offline_seconds(changes, start=start, end=end, offline_at_start=False) == 3 * 3600
    assert (
        offline_seconds([(T + timedelta(hours=4), "online")], start=start, end=end, offline_at_start=True)
        == 4 * 3600
    )
    assert offline_seconds([], start=start, end=end, offline_at_start=True) == 10 * 3600


def test_targets_file(tmp_path: Path) -> None:
    assert load_targets() == Targets()  # the shipped file says what the defaults say
    bad = tmp_path / "o.yaml"
    bad.write_text("answer:\n  - {within_s: 60, min_share: 0.975, typo: 1}\n", encoding="utf-8")
    with pytest.raises(TargetsError, match=r"unknown key 'answer\.0\.typo'"):
        load_targets(bad)
    bad.write_text("arrival: {urban_min: -1}\n", encoding="utf-8")
    with pytest.raises(TargetsError, match=r"arrival\.urban_min"):
        load_targets(bad)


def test_shifts_run_past_midnight_and_refuse_unquoted_times(tmp_path: Path) -> None:
    from datetime import time

    t = Targets()
    assert [t.shift_at(time(h)).name for h in (0, 7, 8, 19, 20, 23)] == [  # type: ignore[union-attr]
        "night",
        "night",
        "day",
        "day",
        "night",
        "night",
    ]
    assert t.shift("night").hours == "20:00–08:00"
    with pytest.raises(ValueError, match=r"unknown shift 'late'; config/oversight\.yaml defines: day, night"):
        t.shift("late")
    f = tmp_path / "o.yaml"
    # YAML 1.1 reads an unquoted 20:00 as the number 1200 (base 60)
    f.write_text("shifts:\n  - {name: late, start: '12:00', end: 20:00}\n", encoding="utf-8")
    with pytest.raises(TargetsError, match="in quotes"):
        load_targets(f)
    f.write_text("shifts:\n  - {name: early, start: '06:00', end: '14:00'}\n", encoding="utf-8")
    only = load_targets(f)
    assert only.shift_at(time(5, 59)) is None and only.shift_at(time(6)).name == "early"  # type: ignore[union-attr]
    f.write_text(
        "shifts:\n  - {name: a, start: '06:00', end: '14:00'}\n  - {name: a, start: '14:00', end: '22:00'}\n"
    )
    with pytest.raises(TargetsError, match="same name"):
        load_targets(f)

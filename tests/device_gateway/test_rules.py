"""Platform-owned alarm rules: one event per episode, deterministic ids, state round-trips."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import Settings
from device_gateway.protocol import EVENT_ID_RE, MetricValue
from device_gateway.rules import (
    DerivedEvent,
    RulesConfig,
    RulesError,
    RuleState,
    VitalRanges,
    VitalRun,
    evaluate,
    load_rules,
    vital_ranges,
)

REPO_RULES = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"
CFG = RulesConfig()
RANGES = vital_ranges(CFG, 0)  # hr 50-110, rr 10-24
T0 = datetime(2025, 11, 26, 10, 0, tzinfo=UTC)
DAY = 14
NIGHT = 23


def ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def run(
    steps: Iterable[tuple[Mapping[str, MetricValue], datetime]],
    *,
    state: RuleState | None = None,
    cfg: RulesConfig = CFG,
    ranges: VitalRanges = RANGES,
    hour: int = DAY,
) -> tuple[RuleState, list[DerivedEvent]]:
    state = state or RuleState()
    out: list[DerivedEvent] = []
    for metrics, at in steps:
        state, events = evaluate(cfg, ranges, state, metrics, at, hour)
        out.extend(events)
    return state, out


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


# --------------------------------------------------------------------------- config


def test_repo_rules_file_is_the_default_config() -> None:
    assert load_rules(REPO_RULES) == RulesConfig()
    assert Settings.model_fields["rules_file"].default == REPO_RULES


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("# nothing\n")
    assert load_rules(path) == RulesConfig()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("vitals:\n  consecutive: 3\n", "unknown key 'vitals.consecutive'"),
        ("vital:\n  consecutive_readings: 3\n", "unknown key 'vital'"),
        ("vitals:\n  consecutive_readings: 0\n", "'vitals.consecutive_readings'"),
        ("battery:\n  low_pct: many\n", "'battery.low_pct'"),
        ("battery:\n  low_pct: 90\n  hysteresis_pct: 10\n", "'battery'"),
        ("bed_exit:\n  night_start_hour: 24\n", "'bed_exit.night_start_hour'"),
        ("bed_exit:\n  night_start_hour: 6\n  night_end_hour: 6\n", "must differ"),
        ("inactivity:\n  hours: -1\n", "'inactivity.hours'"),
    ],
)
def test_bad_rules_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_bad_band_and_missing_level_name_the_key(tmp_path: Path) -> None:
    levels = {lv: {"hr": {"min": 50, "max": 110}, "rr": {"min": 10, "max": 24}} for lv in range(5)}
    levels[2]["hr"] = {"min": 120, "max": 110}
    path = tmp_path / "rules.yaml"
    path.write_text(json.dumps({"vitals": {"levels": {str(k): v for k, v in levels.items()}}}))
    with pytest.raises(RulesError, match=r"'vitals\.levels\.2\.hr': min \(120\) must be below"):
        load_rules(path)
    del levels[4]
    levels[2]["hr"] = {"min": 50, "max": 110}
    path.write_text(json.dumps({"vitals": {"levels": {str(k): v for k, v in levels.items()}}}))
    with pytest.raises(RulesError, match=r"'vitals\.levels'.*missing \[4\]"):
        load_rules(path)


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "nope.yaml")
    path = tmp_path / "rules.yaml"
    path.write_text("vitals: [unclosed\n")
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(RulesError, match="must hold a mapping"):
        load_rules(path)


# --------------------------------------------------------------------------- ranges


def test_level_defaults_widen_with_lost_capacity() -> None:
    prev = vital_ranges(CFG, 0)
    assert prev == VitalRanges(hr_min=50, hr_max=110, rr_min=10, rr_max=24)
    for level in range(1, 5):
        cur = vital_ranges(CFG, level)
        assert cur.hr_min <= prev.hr_min and cur.hr_max >= prev.hr_max
        assert cur.rr_min <= prev.rr_min and cur.rr_max >= prev.rr_max
        prev = cur
    assert vital_ranges(CFG, 4) != vital_ranges(CFG, 0)


def test_resident_override_beats_level_default_bound_by_bound() -> None:
    r = vital_ranges(CFG, 4, hr_min=40, hr_max=None, rr_min=None, rr_max=20)
    level4 = vital_ranges(CFG, 4)
    assert r == VitalRanges(hr_min=40, hr_max=level4.hr_max, rr_min=level4.rr_min, rr_max=20)
    # and the override is what evaluate uses: hr 42 is normal for this resident
    _, events = run([({"hr": 42}, minutes(i)) for i in range(5)], ranges=r)
    assert events == []
    _, events = run([({"hr": 42}, minutes(i)) for i in range(5)], ranges=level4)
    assert [e.type for e in events] == ["vital_alert"]


def test_unassessed_resident_gets_tightest_band_and_bad_input_raises() -> None:
    assert vital_ranges(CFG, None) == vital_ranges(CFG, 0)
    with pytest.raises(ValueError, match="capacity_level"):
        vital_ranges(CFG, 5)
    with pytest.raises(ValueError, match="hr_min"):
        vital_ranges(CFG, 0, hr_min=120)


# --------------------------------------------------------------------------- vitals


def test_vital_alert_fires_once_at_the_nth_reading_with_deterministic_id() -> None:
    steps = [({"hr": 130}, minutes(i)) for i in range(6)]
    state, _ = run(steps[:2])
    assert state.hr == VitalRun(count=2, start_ms=ms(minutes(0)), fired=False)
    state, events = run(steps)
    assert len(events) == 1
    ev = events[0]
    assert ev.event_id == f"rule-vital-hr-{ms(minutes(0))}"
    assert re.match(EVENT_ID_RE, ev.event_id)
    assert ev.type == "vital_alert"
    assert ev.at == minutes(2)
    assert ev.data == {
        "metric": "hr",
        "value": 130,
        "min": 50,
        "max": 110,
        "readings": 3,
        "hr": 130,
    }
    # a second gateway copy fed the same readings agrees on the id
    _, again = run(steps)
    assert again == events


def test_vital_episode_ends_on_normal_and_rearms() -> None:
    steps = [({"rr": 30}, minutes(i)) for i in range(4)]
    steps.append(({"rr": 16}, minutes(4)))
    steps += [({"rr": 5}, minutes(i)) for i in range(5, 8)]
    state, events = run(steps)
    assert [e.event_id for e in events] == [
        f"rule-vital-rr-{ms(minutes(0))}",
        f"rule-vital-rr-{ms(minutes(5))}",
    ]
    assert events[1].data["value"] == 5 and events[1].data["min"] == 10
    assert state.rr.fired


def test_interrupted_run_does_not_fire_and_metrics_are_independent() -> None:
    steps: list[tuple[Mapping[str, MetricValue], datetime]] = [
        ({"hr": 130, "rr": 30}, minutes(0)),
        ({"hr": 130, "rr": 15}, minutes(1)),
        ({"hr": 70, "rr": 30}, minutes(2)),
        ({"hr": 130, "rr": 30}, minutes(3)),
        ({"hr": 130, "rr": 15}, minutes(4)),
    ]
    state, events = run(steps)
    assert events == []
    assert (state.hr.count, state.rr.count) == (2, 0)
    # rr's run went on through hr's normal reading at minute 2
    _, events = run([*steps[:4], ({"hr": 70, "rr": 30}, minutes(4))])
    assert [e.event_id for e in events] == [f"rule-vital-rr-{ms(minutes(2))}"]


def test_missing_or_unusable_reading_leaves_counters_alone() -> None:
    steps: list[tuple[Mapping[str, MetricValue], datetime]] = [
        ({"hr": 130}, minutes(0)),
        ({"rr": 15, "battery_pct": 80}, minutes(1)),
        ({"hr": "n/a"}, minutes(2)),
        ({"hr": True}, minutes(3)),
        ({"hr": math.nan}, minutes(4)),
        ({"hr": 130}, minutes(5)),
    ]
    state, events = run(steps)
    assert events == []
    assert state.hr.count == 2 and state.hr.start_ms == ms(minutes(0))
    _, events = run([({"hr": 131}, minutes(6))], state=state)
    assert [e.event_id for e in events] == [f"rule-vital-hr-{ms(minutes(0))}"]


def test_zero_from_an_empty_bed_is_no_signal_but_apnea_in_bed_alerts() -> None:
    start: list[tuple[Mapping[str, MetricValue], datetime]] = [
        ({"presence": "in_bed"}, minutes(0)),
        ({"presence": "out_of_bed", "hr": 0, "rr": 0}, minutes(1)),
    ]
    empty = start + [({"hr": 0, "rr": 0}, minutes(i)) for i in range(2, 6)]
    _, events = run(empty)
    assert events == []
    apnea: list[tuple[Mapping[str, MetricValue], datetime]] = [
        ({"presence": "in_bed", "hr": 60, "rr": 0}, minutes(i)) for i in range(3)
    ]
    _, events = run(apnea)
    assert [(e.type, e.data["metric"]) for e in events] == [("vital_alert", "rr")]


def _out_of_range_runs(values: list[int | None], n: int) -> int:
    runs = length = 0
    for v in values:
        if v is None:
            continue
        if 50 <= v <= 110:
            length = 0
            continue
        length += 1
        if length == n:
            runs += 1
    return runs


@given(
    values=st.lists(st.one_of(st.none(), st.sampled_from([30, 49, 50, 80, 110, 111, 180])), max_size=40),
    n=st.integers(min_value=1, max_value=5),
)
def test_one_vital_event_per_long_enough_run(values: list[int | None], n: int) -> None:
    cfg = RulesConfig.model_validate({"vitals": {"consecutive_readings": n}})
    steps = [({} if v is None else {"hr": v}, minutes(i)) for i, v in enumerate(values)]
    _, events = run(steps, cfg=cfg)
    assert len(events) == _out_of_range_runs(values, n)
    assert len({e.event_id for e in events}) == len(events)


# --------------------------------------------------------------------------- bed exit


def night_exit(hour: int = NIGHT) -> tuple[RuleState, list[DerivedEvent]]:
    return run([({"presence": "in_bed"}, minutes(0)), ({"presence": "out_of_bed"}, minutes(1))], hour=hour)


def test_not_back_in_bed_at_night_fires_once_after_m_minutes() -> None:
    state, events = night_exit()
    assert events == [] and state.out_since_ms == ms(minutes(1)) and state.out_at_night
    state, events = run([({}, minutes(20.9))], state=state, hour=NIGHT)
    assert events == []
    state, events = run([({}, minutes(21)), ({}, minutes(30))], state=state, hour=NIGHT)
    assert len(events) == 1
    ev = events[0]
    assert ev.type == "bed_exit"
    assert ev.event_id == f"rule-bed-exit-{ms(minutes(1))}"
    assert ev.data == {"returned": False, "minutes": 20, "left_at": "2025-11-26T10:01:00.000+00:00"}
    # still out: no second call; moving between out_of_bed and absent is the same episode
    state, events = run([({"presence": "absent"}, minutes(40)), ({}, minutes(90))], state=state, hour=0)
    assert events == []
    # back in bed, out again: a new episode with its own id
    state, events = run(
        [
            ({"presence": "in_bed"}, minutes(100)),
            ({"presence": "out_of_bed"}, minutes(110)),
            ({}, minutes(130)),
        ],
        state=state,
        hour=2,
    )
    assert [e.event_id for e in events] == [f"rule-bed-exit-{ms(minutes(110))}"]


def test_back_in_time_or_by_day_raises_nothing() -> None:
    state, _ = night_exit()
    _, events = run([({"presence": "in_bed"}, minutes(15)), ({}, minutes(60))], state=state, hour=NIGHT)
    assert events == []
    state, _ = night_exit(hour=DAY)
    assert not state.out_at_night
    # the evening that follows is night, but the exit was by day: no bed_exit
    _, events = run([({}, minutes(60))], state=state, hour=NIGHT)
    assert [e.type for e in events] == []


def test_out_of_bed_first_reading_starts_no_episode() -> None:
    _, events = run([({"presence": "out_of_bed"}, minutes(0)), ({}, minutes(120))], hour=NIGHT)
    assert events == []


@pytest.mark.parametrize(
    ("start", "end", "night", "day"),
    [(22, 6, [22, 23, 0, 5], [6, 12, 21]), (0, 6, [0, 3, 5], [6, 23])],
)
def test_night_window_wraps_or_not(start: int, end: int, night: list[int], day: list[int]) -> None:
    cfg = RulesConfig.model_validate({"bed_exit": {"night_start_hour": start, "night_end_hour": end}})
    assert all(cfg.bed_exit.is_night(h) for h in night)
    assert not any(cfg.bed_exit.is_night(h) for h in day)


# --------------------------------------------------------------------------- inactivity


def test_no_movement_for_h_hours_fires_once_and_movement_rearms() -> None:
    hours = timedelta(hours=1)
    state, events = run([({"motion": 0}, T0), ({"motion": 0}, T0 + 3 * hours)])
    assert events == [] and state.last_activity_ms == ms(T0)
    state, events = run([({}, T0 + 4 * hours), ({"motion": 0}, T0 + 5 * hours)], state=state)
    assert len(events) == 1
    assert events[0].type == "inactivity"
    assert events[0].event_id == f"rule-inactivity-{ms(T0)}"
    assert events[0].data == {"minutes": 240, "last_activity": "2025-11-26T10:00:00.000+00:00"}
    moved = T0 + 6 * hours
    state, events = run([({"motion": 2}, moved), ({}, moved + 4 * hours)], state=state)
    assert [e.event_id for e in events] == [f"rule-inactivity-{ms(moved)}"]


def test_presence_change_counts_as_movement() -> None:
    hours = timedelta(hours=1)
    steps: list[tuple[Mapping[str, MetricValue], datetime]] = [
        ({"presence": "in_bed", "motion": 0}, T0),
        ({"presence": "out_of_bed", "motion": 0}, T0 + 3 * hours),
        ({"presence": "out_of_bed", "motion": False}, T0 + 6 * hours),
        ({"presence": "out_of_bed"}, T0 + 7 * hours),
    ]
    _, events = run(steps)
    assert [e.event_id for e in events] == [f"rule-inactivity-{ms(T0 + 3 * hours)}"]


def test_device_without_motion_or_presence_never_raises_inactivity() -> None:
    _, events = run([({"battery_pct": 90}, T0), ({}, T0 + timedelta(days=2))])
    assert events == []


def test_inactivity_hours_are_configurable() -> None:
    cfg = RulesConfig.model_validate({"inactivity": {"hours": 0.5}})
    _, events = run([({"motion": 0}, minutes(0)), ({}, minutes(29))], cfg=cfg)
    assert events == []
    _, events = run([({"motion": 0}, minutes(0)), ({}, minutes(30))], cfg=cfg)
    assert [e.data["minutes"] for e in events] == [30]


# --------------------------------------------------------------------------- battery


def test_low_battery_once_with_hysteresis() -> None:
    levels = [25, 20, 19, 18, 15, 22, 25, 19, 26, 19, 10]
    steps = [({"battery_pct": v}, minutes(i)) for i, v in enumerate(levels)]
    _, events = run(steps)
    assert [e.type for e in events] == ["low_battery", "low_battery"]
    assert [e.event_id for e in events] == [
        f"rule-battery-{ms(minutes(2))}",
        f"rule-battery-{ms(minutes(9))}",
    ]
    assert events[0].data == {"battery_pct": 19, "threshold_pct": 20}


# --------------------------------------------------------------------------- state


_ms_values = st.one_of(st.none(), st.integers(min_value=0, max_value=4_102_444_800_000))
_runs = st.builds(
    VitalRun,
    count=st.integers(min_value=0, max_value=100),
    start_ms=_ms_values,
    fired=st.booleans(),
)
_states = st.builds(
    RuleState,
    hr=_runs,
    rr=_runs,
    presence=st.sampled_from([None, "in_bed", "out_of_bed", "absent"]),
    out_since_ms=_ms_values,
    out_at_night=st.booleans(),
    bed_exit_fired=st.booleans(),
    last_activity_ms=_ms_values,
    inactivity_fired=st.booleans(),
    battery_low_since_ms=_ms_values,
)


@given(_states)
def test_rule_state_round_trips_through_json(state: RuleState) -> None:
    assert RuleState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


_metric_maps = st.dictionaries(
    st.sampled_from(["hr", "rr", "presence", "motion", "battery_pct", "rssi_dbm"]),
    st.one_of(
        st.integers(min_value=0, max_value=200),
        st.floats(min_value=0, max_value=200),
        st.booleans(),
        st.sampled_from(["in_bed", "out_of_bed", "absent", "sitting"]),
    ),
)


@given(st.lists(st.tuples(_metric_maps, st.integers(0, 600), st.integers(0, 23)), max_size=25))
def test_evaluated_states_round_trip_and_ids_are_valid(
    steps: list[tuple[dict[str, Any], int, int]],
) -> None:
    state = RuleState()
    for metrics, minute, hour in steps:
        state, events = evaluate(CFG, RANGES, state, metrics, minutes(minute), hour)
        assert RuleState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
        assert all(re.match(EVENT_ID_RE, e.event_id) for e in events)
        json.dumps([e.data for e in events])


def test_from_dict_defaults_missing_ignores_unknown_and_rejects_bad_types() -> None:
    assert RuleState.from_dict({}) == RuleState()
    assert RuleState.from_dict({"v": 1, "future_key": [1, 2]}) == RuleState()
    with pytest.raises(ValueError, match=r"'hr\.count'"):
        RuleState.from_dict({"hr": {"count": "3"}})
    with pytest.raises(ValueError, match="'out_since_ms'"):
        RuleState.from_dict({"out_since_ms": True})
    with pytest.raises(ValueError, match="'bed_exit_fired'"):
        RuleState.from_dict({"bed_exit_fired": 1})
    with pytest.raises(ValueError, match="presence"):
        RuleState.from_dict({"presence": "sofa"})
    with pytest.raises(ValueError, match="version"):
        RuleState.from_dict({"v": 2})


def test_naive_time_and_bad_hour_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(CFG, RANGES, RuleState(), {}, datetime(2025, 1, 1), DAY)
    with pytest.raises(ValueError, match="local_hour"):
        evaluate(CFG, RANGES, RuleState(), {}, T0, 24)

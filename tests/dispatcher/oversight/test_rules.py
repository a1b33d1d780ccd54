"""The pure decisions of issue 13: which calls count toward which target, the working-
hours target for device trouble, which device kinds have the weekly test, durations and
labels in both languages, scope labels, chart labels that do not overlap."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from device_gateway.kinds import DeviceKind
from dispatcher.oversight.figures import CallInfo, CallMarks, call_figures, summary
from dispatcher.oversight.health import DeviceFacts, device_rows, weekly_test_overdue
from dispatcher.oversight.render import label_every, text_width
from dispatcher.oversight.review import review_list
from dispatcher.oversight.targets import TESTING_KINDS, Targets, TargetsError, TroubleTarget
from dispatcher.oversight.targets_file import load_targets
from dispatcher.oversight.text import (
    code_label,
    column_label,
    format_duration,
    format_local,
    parse_lang,
    scope_label,
)
from dispatcher.oversight.workhours import trouble_state, working_seconds

SH = "Asia/Shanghai"
# Thursday 2026-11-26 in Shanghai (UTC+8)
THU_0900 = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)


def _sh(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC) - timedelta(hours=8)


# ---------------------------------------------------------------- working hours


def test_working_seconds_count_only_the_working_day() -> None:
    t = TroubleTarget()  # 08:00–18:00, every day, 4 h
    assert working_seconds(_sh(26, 9), _sh(26, 12), t, SH) == 3 * 3600
    assert working_seconds(_sh(26, 17), _sh(27, 9), t, SH) == 2 * 3600  # 17–18 and 08–09
    assert working_seconds(_sh(26, 19), _sh(27, 7), t, SH) == 0  # the night does not count
    assert working_seconds(_sh(26, 12), _sh(26, 11), t, SH) == 0
    weekdays = TroubleTarget(days=("mon", "tue", "wed", "thu", "fri"))
    # Friday 27 17:00 → Monday 30 09:00: 1 h Friday, weekend skipped, 1 h Monday
    assert working_seconds(_sh(27, 17), _sh(30, 9), weekdays, SH) == 2 * 3600
    with pytest.raises(ValueError):
        working_seconds(datetime(2026, 11, 26, 9), _sh(26, 12), t, SH)


def test_trouble_state_in_working_hours() -> None:
    t = TroubleTarget(acknowledge_within_h=4)
    # low battery at 23:00: due at 12:00 next day
    night = _sh(26, 23)
    assert trouble_state(night, _sh(27, 11, 59), _sh(27, 11, 59), t, SH) is True
    assert trouble_state(night, _sh(27, 12, 1), _sh(27, 12, 1), t, SH) is False
    assert trouble_state(night, None, _sh(27, 12, 30), t, SH) is False  # waiting past it
    assert trouble_state(night, None, _sh(27, 10), t, SH) is None  # not due yet
    # 16:00 with nobody acknowledging until 09:00 next morning: 2 h + 1 h, met
    assert trouble_state(_sh(26, 16), _sh(27, 9), _sh(27, 9), t, SH) is True


def test_trouble_target_config_is_checked() -> None:
    assert TroubleTarget().weekdays == frozenset(range(7))
    with pytest.raises(ValueError):
        TroubleTarget(start=time(18), end=time(8))
    with pytest.raises(ValueError):
        TroubleTarget(days=("mon", "funday"))
    with pytest.raises(ValueError):
        Targets.model_validate({"trouble": {"start": 480}})  # unquoted 08:00 in YAML
    with pytest.raises(ValueError):
        Targets.model_validate({"answer_classes": ["emergency", "info"]})
    with pytest.raises(ValueError):
        Targets.model_validate({"devices": {"tested_kinds": ["button", "toaster"]}})


def test_shipped_targets_file_matches_the_defaults(tmp_path: Path) -> None:
    shipped = load_targets()
    assert shipped == Targets()
    assert shipped.answer_classes == ("emergency", "urgent")
    assert shipped.trouble.acknowledge_within_h == 4
    assert (shipped.trouble.start, shipped.trouble.end) == (time(8), time(18))
    bad = tmp_path / "o.yaml"
    bad.write_text("trouble:\n  acknowledge_within: 4\n", encoding="utf-8")
    with pytest.raises(TargetsError, match="acknowledge_within"):
        load_targets(bad)


# ---------------------------------------------------------------- which calls count


def _info(call_id: int, cls: str, type_: str) -> CallInfo:
    return CallInfo(
        call_id, "cm1", "Community 1", "h1", "cm1", "st1", "Street 1", "county", "County", SH,
        "urban", "P4" if cls == "trouble" else "P1", type_, cls, "open", None,
    )  # fmt: skip


def test_trouble_calls_are_outside_the_emergency_targets() -> None:
    now = _sh(26, 17)
    start = _sh(26, 9)
    t = Targets()
    sos = call_figures(
        _info(1, "emergency", "sos"),
        CallMarks.of(start, acknowledged_at=start + timedelta(seconds=30)),
        t,
        now,
    )
    urgent = call_figures(
        _info(2, "urgent", "inactivity"),
        CallMarks.of(start, acknowledged_at=start + timedelta(seconds=90)),
        t,
        now,
    )
    battery = call_figures(_info(3, "trouble", "low_battery"), CallMarks.of(start), t, now)  # 8 h unanswered
    offline = call_figures(
        _info(4, "trouble", "offline"),
        CallMarks.of(start, acknowledged_at=start + timedelta(hours=1)),
        t,
        now,
    )
    assert sos.graded and urgent.graded and not battery.graded and not offline.graded
    assert battery.answer_met == {60.0: None, 180.0: None} and battery.answer_review is None
    assert (battery.trouble_met, offline.trouble_met, sos.trouble_met) == (False, True, None)
    s = summary([sos, urgent, battery, offline], t)
    assert s["calls"] == 4 and s["graded_calls"] == 2 and s["trouble_calls"] == 2
    assert (s["answer_within_60s_met"], s["answer_within_60s_eligible"]) == (1, 2)
    assert s["answer_n"] == 2 and s["answer_max_s"] == 90.0 and s["unanswered"] == 0
    assert (s["trouble_in_time_met"], s["trouble_in_time_eligible"], s["trouble_unanswered"]) == (1, 2, 1)
    reasons = {i.figures.info.call_id: i.reasons for i in review_list([sos, urgent, battery, offline])}
    assert reasons == {3: ("trouble_late",)}
    # a county that grades trouble by the answer targets too can say so
    everything = Targets.model_validate({"answer_classes": ["emergency", "urgent", "trouble"]})
    s2 = summary(
        [call_figures(f.info, f.marks, everything, now) for f in (sos, urgent, battery, offline)], everything
    )
    assert s2["answer_within_60s_eligible"] == 4


# ---------------------------------------------------------------- weekly test


def _device(kind: str, last_test: datetime | None) -> DeviceFacts:
    created = THU_0900 - timedelta(days=60)
    return DeviceFacts(
        f"d-{kind}", "h1", "cm1", "st1", kind, True, created, True, None, THU_0900, 80.0, last_test, 0.0, 0
    )


def test_weekly_test_only_for_the_kinds_that_test() -> None:
    assert set(TESTING_KINDS) == {"button", "smoke", "gas", "water"}
    never = {
        k.value: weekly_test_overdue(k.value, None, THU_0900 - timedelta(days=60), THU_0900, days=7)
        for k in DeviceKind
    }
    assert {k for k, v in never.items() if v} == set(TESTING_KINDS)
    assert (
        weekly_test_overdue(
            "button", THU_0900 - timedelta(days=2), THU_0900 - timedelta(days=60), THU_0900, days=7
        )
        is False
    )
    rows = device_rows(
        [_device(k.value, None) for k in DeviceKind], now=THU_0900, test_every_days=7, low_battery_pct=20
    )
    flagged = {r["kind"] for r in rows if r["not_tested"]}
    assert flagged == set(TESTING_KINDS)
    hub = next(r for r in rows if r["kind"] == "hub")
    assert hub["sends_tests"] is False and hub["test_every_days"] is None
    only_buttons = device_rows(
        [_device(k.value, None) for k in DeviceKind],
        now=THU_0900,
        test_every_days=7,
        low_battery_pct=20,
        tested_kinds=("button",),
    )
    assert {r["kind"] for r in only_buttons if r["not_tested"]} == {"button"}


# ---------------------------------------------------------------- text


def test_format_duration_in_both_languages() -> None:
    assert format_duration(72.4, "en") == "1 min 12 s"
    assert format_duration(72.4, "zh-CN") == "1分12秒"
    assert format_duration(2039.713, "en") == "34 min"
    assert format_duration(2039.713, "zh-CN") == "34分"
    assert format_duration(45, "en") == "45 s" and format_duration(0.4, "zh-CN") == "0秒"
    assert format_duration(120, "en") == "2 min"
    assert format_duration(3600 * 2 + 300, "zh-CN") == "2小时5分"
    assert format_duration(86400 + 3 * 3600 + 59, "en") == "1 d 3 h"
    assert format_duration(59.5, "en") == "1 min"
    assert format_duration(None, "en") == "–"
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            format_duration(bad, "en")


def test_local_times_codes_and_headers() -> None:
    at = datetime(2026, 11, 26, 3, 4, 5, tzinfo=UTC)
    assert format_local(at, SH, "en") == "2026-11-26 11:04"
    assert format_local(at.isoformat(), SH, "zh-CN") == "2026年11月26日 11:04"
    with pytest.raises(ValueError):
        format_local(datetime(2026, 11, 26), SH, "en")
    assert code_label("type", "low_battery", "zh-CN") == "电量低"
    assert code_label("reason", "trouble_late", "en") == "trouble handled late"
    assert code_label("type", "new_gadget_alarm", "en") == "new_gadget_alarm"  # never hidden
    assert column_label("answer_median_s", "en") == "answer median (s)"
    assert column_label("answer_median_s", "zh-CN") == "接听中位数（秒）"
    assert column_label("answer_within_60s_pct", "en") == "answered ≤ 1 min: %"
    assert column_label("answer_within_180s_met", "zh-CN") == "3分内接听：达标数"
    assert column_label("station_name", "zh-CN") == "站点"
    assert parse_lang("zh") == "zh-CN" and parse_lang("en-GB") == "en" and parse_lang(None) == "zh-CN"
    with pytest.raises(ValueError, match="zh-CN"):
        parse_lang("fr")


def test_scope_label_names_the_street_not_the_county() -> None:
    stations = {
        "county": ("Zhenping county", None),
        "st1": ("Yuquan street", "county"),
        "cm1": ("Nanguan community", "st1"),
    }
    street_scope = frozenset({"st1", "cm1"})
    assert scope_label(None, street_scope, stations, "en") == "Yuquan street"
    assert scope_label(None, None, stations, "en") == "whole county"
    assert scope_label(None, None, stations, "zh-CN") == "全县"
    assert scope_label("cm1", street_scope, stations, "zh-CN") == "Nanguan community"
    assert scope_label(None, frozenset(), stations, "en") == "–"


def test_chart_labels_never_overlap() -> None:
    labels = ["vital signs alert", "low battery", "device offline", "one-key call"] * 3
    slot = 600 / len(labels)
    k = label_every(labels, slot)
    widest = max(text_width(lab) for lab in labels)
    assert k * slot >= widest + 4 and (k - 1) * slot < widest + 4
    assert label_every([f"{h:02d}" for h in range(24)], 600 / 24) == 1
    assert text_width("电量低") == 27.0
    with pytest.raises(ValueError):
        label_every(labels, 0)

"""Scenario files: shipped ones load, and mistakes are reported by key, never silently zeroed."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.scenario import Scenario, ScenarioError, load_scenario, scenario_path


@pytest.mark.parametrize("name", ["normal", "quiet", "storm"])
def test_shipped_scenarios_load_by_bare_name(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.resend.initial_s == 5
    assert scenario.resend.factor == 2
    assert scenario.resend.max_s == 60


def test_normal_is_everyday_life_and_storm_is_bounded() -> None:
    normal = load_scenario("normal")
    assert normal.duration_s is None
    assert normal.rates["button"]["test"] == pytest.approx(1 / 7, rel=1e-3)
    assert normal.offline.probability_per_day > 0
    # a newcomer sees calls within minutes: an SOS first, the low battery later
    assert normal.scripted[0].type == "sos" and normal.scripted[0].at_s <= 30
    assert "low_battery" in [s.type for s in normal.scripted]
    # bed exits are a night thing
    assert normal.rate_per_s("mattress", "bed_exit", night=True) > 5 * normal.rate_per_s(
        "mattress", "bed_exit", night=False
    )
    storm = load_scenario("storm")
    assert storm.duration_s is not None and storm.burst is not None
    assert storm.burst.start_s + storm.burst.duration_s < storm.duration_s
    quiet = load_scenario("quiet")
    assert quiet.rates == {} and quiet.burst is None and quiet.offline.rate_per_s == 0


def test_bare_name_and_path_resolve_to_the_same_file() -> None:
    path = scenario_path("normal")
    assert path.name == "normal.yaml" and path.is_file()
    assert load_scenario(path) == load_scenario("normal")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="unknown key 'ratez'"):
        load_scenario(_write(tmp_path, "ratez: {button: {sos: 1}}\n"))


def test_unknown_nested_key_is_named_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"unknown key 'resend\.initial'"):
        load_scenario(_write(tmp_path, "resend: {initial: 5}\n"))


def test_misspelt_event_type_and_kind_are_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"rates.*'sso'"):
        load_scenario(_write(tmp_path, "rates: {button: {sso: 1}}\n"))
    with pytest.raises(ScenarioError, match=r"rates.*'buton'"):
        load_scenario(_write(tmp_path, "rates: {buton: {sos: 1}}\n"))


def test_bad_values_are_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"'offline\.probability_per_day'"):
        load_scenario(_write(tmp_path, "offline: {probability_per_day: 2}\n"))
    with pytest.raises(ScenarioError, match=r"'resend'.*max_s"):
        load_scenario(_write(tmp_path, "resend: {initial_s: 30, max_s: 10}\n"))


def test_missing_scenario_lists_the_shipped_ones() -> None:
    with pytest.raises(ScenarioError, match=r"shipped: .*normal"):
        load_scenario("no-such-scenario")


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="mapping"):
        load_scenario(_write(tmp_path, "- a\n- b\n"))


def test_empty_scenario_means_heartbeats_only() -> None:
    scenario = Scenario()
    assert scenario.peak_rate_per_s("button") == 0
    assert scenario.heartbeat_for("hub", 60) == 60


def test_scenario_is_frozen() -> None:
    scenario = Scenario()
    with pytest.raises(ValueError, match="frozen"):
        scenario.name = "x"  # type: ignore[misc]

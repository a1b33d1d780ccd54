"""config/visits.yaml: the shipped file loads, and a wrong one is refused by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.visits.config_file import VisitsConfigError, load_visit_rules
from dispatcher.visits.rules import Category, Frequency


def test_the_shipped_policy_visits_special_difficulty_monthly_and_the_frail_alone_weekly() -> None:
    rules = load_visit_rules()
    assert rules.special_difficulty_every is Frequency.monthly
    assert set(rules.categories) == set(Category)
    [risk] = rules.risk_rules
    assert (risk.min_capacity_level, risk.living_alone, risk.every) == (3, True, Frequency.weekly)
    assert rules.follow_up_within_h == 24
    assert rules.escalation.station_manager_after_h < rules.escalation.street_after_h


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("special_difficulty_every: once\n", "at least monthly"),
        ("timezone: Mars/Olympus\n", "unknown time zone"),
        ("categorys: []\n", "unknown key 'categorys'"),
        ("risk_rules:\n  - name: all\n    every: weekly\n", "no condition"),
        ("risk_rules:\n  - name: a\n    living_alone: true\n    every: once\n", "recurring"),
        ("escalation:\n  station_manager_after_h: 100\n  street_after_h: 50\n", "street_after_h"),
        ("missed_after_h: 72\nescalation:\n  station_manager_after_h: 48\n", "missed_after_h"),
        ("generate_every_s: 600\n", "generate_every_s"),
        ("categories: [orphans]\n", "categories"),
        ("- a\n", "must hold a mapping"),
    ],
)
def test_a_wrong_policy_is_refused_naming_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    f = tmp_path / "visits.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(VisitsConfigError, match=problem):
        load_visit_rules(f)

"""The simulated staff's behaviour: a pure plan per call, drawn from a seeded stream."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from carecall.shell.sim_call_facts import CallFacts, facts_from_policy, pick_responders
from carecall.shell.sim_call_plan import Behaviour, Plan, plan_call
from carecall.shell.sim_operators import STOPPED_BY


def facts(
    cid: int = 1,
    cls: str = "emergency",
    area: str = "urban",
    limit: float = 900.0,
    county: float | None = 180.0,
) -> CallFacts:
    return CallFacts(
        call_id=cid,
        event_class=cls,
        event_type="sos",
        area=area,
        travel_limit_s=limit,
        county_after_s=county,
        street_after_s=60.0,
    )


def plans(
    n: int = 3000,
    cls: str = "emergency",
    area: str = "urban",
    limit: float = 900.0,
    county: float | None = 180.0,
) -> list[Plan]:
    return [plan_call(facts(i, cls, area, limit, county), random.Random(f"t:{i}")) for i in range(n)]


def test_same_call_same_stream_same_plan() -> None:
    a = plan_call(facts(7), random.Random("1:call:7"))
    b = plan_call(facts(7), random.Random("1:call:7"))
    assert a == b


def test_steps_are_in_order_and_end_closed() -> None:
    for p in plans(500):
        times = [s.at_s for s in p.steps]
        assert times == sorted(times)
        assert p.steps[0].action == "acknowledge"
        assert p.steps[-1].action in ("resolve", "cancel")
        assert p.outcome is not None


def test_answer_shares_match_the_behaviour() -> None:
    ps = plans()
    answers = Counter(p.answer for p in ps)
    n = len(ps)
    assert 0.85 < answers["fast"] / n < 0.91
    assert 0.06 < answers["slow"] / n < 0.10
    assert 0.02 < answers["unanswered"] / n < 0.06
    for p in ps:
        t = p.steps[0].at_s
        if p.answer == "fast":
            assert t < 60
        elif p.answer == "slow":
            assert 60 < t < 180
        else:
            assert t > 180  # after the county escalation (180 s): the timers did their work


def test_unanswered_calls_wait_for_their_own_policys_county_step() -> None:
    late = [p for p in plans(county=900.0) if p.answer == "unanswered"]
    assert late and all(p.steps[0].at_s > 900 for p in late)


def test_arrival_mostly_inside_the_circle_urban_and_rural() -> None:
    for area, limit in (("urban", 900.0), ("rural", 1800.0)):
        arrivals = [s.at_s for p in plans(area=area, limit=limit) for s in p.steps if s.action == "arrive"]
        late = sum(1 for a in arrivals if a > limit) / len(arrivals)
        assert 0.04 < late < 0.11
        assert max(arrivals) < limit * 1.8 + 1000


def test_outcomes_include_no_access_false_alarms_and_the_rest_resolved() -> None:
    ps = plans()
    outcomes = Counter(p.outcome for p in ps)
    assert outcomes["no_access"] > 0
    assert outcomes["false_alarm"] > 0
    assert outcomes["helped_on_site"] > outcomes["taken_to_hospital"] > 0
    phone = [p for p in ps if all(s.action != "dispatch" for s in p.steps)]
    assert phone and all(p.steps[-1].action == "cancel" for p in phone)  # talked to, nobody sent


def test_trouble_calls_are_mostly_closed_by_phone_without_an_emergency_outcome() -> None:
    ps = plans(cls="trouble", county=None)
    assert all(p.outcome == "other" for p in ps)
    sent = sum(1 for p in ps if any(s.action == "dispatch" for s in p.steps)) / len(ps)
    assert 0.2 < sent < 0.4


def test_a_stricter_behaviour_is_just_other_numbers() -> None:
    perfect = Behaviour(answer_fast=1.0, answer_slow=0.0, late_arrival=0.0)
    ps = [plan_call(facts(i), random.Random(i), perfect) for i in range(300)]
    assert all(p.answer == "fast" for p in ps)
    assert all(s.at_s <= 900 for p in ps for s in p.steps if s.action == "arrive")


def test_facts_from_the_frozen_policy_snapshot() -> None:
    snap = {
        "steps": [
            {"action": "escalate_street", "after_s": 300.0},
            {"action": "escalate_county", "after_s": 900},
            {"action": "alert_supervisor", "after_s": 1800.0},
            "garbage",
            {"action": "remind", "after_s": "soon"},
        ],
        "travel_limit_s": 1800.0,
    }
    f = facts_from_policy(3, "urgent", "bed_exit", "rural", snap)
    assert (f.street_after_s, f.county_after_s, f.travel_limit_s, f.area) == (300.0, 900.0, 1800.0, "rural")
    odd = facts_from_policy(4, "trouble", "offline", "moon", {})
    assert (odd.county_after_s, odd.street_after_s, odd.travel_limit_s, odd.area) == (
        None,
        None,
        0.0,
        "urban",
    )
    assert plan_call(odd, random.Random(1)).steps  # bad input plans something sane, never raises


@pytest.mark.parametrize(
    ("scope", "want"),
    [
        (None, ["home-1"]),  # the home's own station first
        (frozenset({"street"}), ["street-1"]),  # only what the operator may see
        (frozenset({"nowhere"}), []),
    ],
)
def test_pick_responders(scope: frozenset[str] | None, want: list[str]) -> None:
    free = [("county-1", "county"), ("street-1", "street"), ("home-1", "home")]
    assert pick_responders(free, ["home", "street"], scope) == want


def test_every_stopped_timer_names_a_planned_action() -> None:
    assert set(STOPPED_BY.values()) <= {"acknowledge", "arrive"}

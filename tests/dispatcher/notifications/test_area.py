"""Who a supervisor alert goes to (the pure rule, dispatcher/notifications/area.py): the
supervisors of the call's station and street; the county's when the street has none;
the county centre's duty group when nobody qualifies."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.notifications.area import ChainLink, Layer, plan_supervisors

CHAIN = [ChainLink("cm1", "community"), ChainLink("st1", "street"), ChainLink("county", "county")]


def test_station_and_street_supervisors_not_the_county_when_the_street_has_one() -> None:
    plan = plan_supervisors(CHAIN, {"cm1": ["li"], "st1": ["wang", "zhao"], "county": ["chen"]})
    assert plan.usernames == ("li", "wang", "zhao")
    assert plan.layers == (Layer.station, Layer.street)
    assert plan.targets == ("user:li", "user:wang", "user:zhao")
    assert not plan.unassigned and plan.fallback_station is None


def test_the_county_stands_in_for_a_street_without_a_supervisor() -> None:
    plan = plan_supervisors(CHAIN, {"cm1": ["li"], "county": ["chen"]})
    assert plan.usernames == ("li", "chen") and plan.layers == (Layer.station, Layer.county)
    only_county = plan_supervisors(CHAIN, {"county": ["chen"]})
    assert only_county.targets == ("user:chen",) and only_county.layers == (Layer.county,)


def test_a_station_directly_under_the_county_and_a_call_without_station() -> None:
    chain = [ChainLink("vp1", "community"), ChainLink("county", "county")]
    assert plan_supervisors(chain, {"vp1": ["li"], "county": ["chen"]}).usernames == ("li", "chen")
    # no station at all: the county centres (read by the caller) are the scope
    plan = plan_supervisors([], {"county": ["chen"]}, ["county"])
    assert plan.usernames == ("chen",)
    assert plan_supervisors([], {}, ["county"]).targets == ("station:county",)


def test_nobody_qualifies_the_county_centres_duty_group_gets_it() -> None:
    plan = plan_supervisors(CHAIN, {"cm2": ["elsewhere"]})
    assert plan.unassigned and plan.usernames == ()
    assert plan.targets == ("station:county",) and plan.fallback_station == "county"
    # a chain that never reaches a county (bad data): its root
    broken = plan_supervisors([ChainLink("cm1", "community"), ChainLink("st1", "street")], {})
    assert broken.targets == ("station:st1",)
    assert plan_supervisors([], {}).targets == ()


def test_a_supervisor_listed_twice_is_alerted_once() -> None:
    plan = plan_supervisors(CHAIN, {"cm1": ["li", "li"], "st1": ["li", "wang"]})
    assert plan.usernames == ("li", "wang")


NAMES = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3)


@given(NAMES, NAMES, NAMES)
def test_never_a_placeholder_and_never_empty_when_the_county_exists(
    station: list[str], street: list[str], county: list[str]
) -> None:
    plan = plan_supervisors(CHAIN, {"cm1": station, "st1": street, "county": county})
    assert plan.targets, "an alert always goes somewhere"
    assert set(plan.usernames) <= set(station) | set(street) | set(county)
    assert len(set(plan.usernames)) == len(plan.usernames)
    assert set(plan.usernames) >= set(station) | set(street)
    assert (set(county) <= set(plan.usernames)) == (not street or set(county) <= set(station) | set(street))
    if not (station or street or county):
        assert plan.targets == ("station:county",)
    assert not any(t.startswith("supervisor:") for t in plan.targets)


# ------------------------------------------------ a station's own people (orders, visits)


def test_a_stations_managers_then_its_on_duty_staff_then_its_duty_group() -> None:
    from dispatcher.notifications.area import StationPeople, managers_of, station_duty

    full = StationPeople("cm1", ("user:sup-cm1", "staff:cm1-m1"), ("staff:cm1-r1",))
    assert managers_of(full) == ("user:sup-cm1", "staff:cm1-m1")
    assert managers_of(StationPeople("cm1", (), ("staff:cm1-r1",))) == ("staff:cm1-r1",)
    assert managers_of(StationPeople("cm1")) == ("station:cm1",), "never dropped"
    assert station_duty(full) == ("station:cm1", "staff:cm1-r1")
    assert station_duty(StationPeople("cm1")) == ("station:cm1",)

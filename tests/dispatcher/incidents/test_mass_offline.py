"""The mass offline decision (dispatcher.incidents.mass_offline): pure, over plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.calls.config_files import DispatchConfigError, load_dispatch_config
from dispatcher.incidents.mass_offline import (
    Join,
    MassOfflineConfig,
    Open,
    OpenIncident,
    Outage,
    Sighting,
    StationRef,
    ancestors,
    attributed_outage,
    classify,
    cluster_area,
    window_count,
)

T0 = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
CFG = MassOfflineConfig()

# county → two streets → two communities each
TREE = {
    "county": StationRef("county", None, "county"),
    "st1": StationRef("st1", "county", "street"),
    "st2": StationRef("st2", "county", "street"),
    "cm11": StationRef("cm11", "st1", "community"),
    "cm12": StationRef("cm12", "st1", "community"),
    "cm21": StationRef("cm21", "st2", "community"),
    "cm22": StationRef("cm22", "st2", "community"),
}


def s(n: int, station: str, after_s: float = 0.0) -> Sighting:
    return Sighting(f"d{station}-{n}", f"h{station}-{n}", station, T0 + timedelta(seconds=after_s))


def many(count: int, station: str, spread_s: float = 10.0, start: int = 0) -> list[Sighting]:
    return [s(start + i, station, spread_s * i / max(count - 1, 1)) for i in range(count)]


def t(sec: float) -> datetime:
    return T0 + timedelta(seconds=sec)


def test_ancestors_walk_up_and_survive_cycles_and_unknown_parents() -> None:
    assert ancestors(TREE, "cm12") == ["cm12", "st1", "county"]
    assert ancestors(TREE, "nowhere") == []
    loop = {"a": StationRef("a", "b", "community"), "b": StationRef("b", "a", "street")}
    assert ancestors(loop, "a") == ["a", "b"]
    assert ancestors({"x": StationRef("x", "gone", "community")}, "x") == ["x"]


def test_window_count_is_the_best_window_holding_the_event() -> None:
    times = [t(0), t(10), t(20), t(59), t(61), t(130)]
    assert window_count(times, t(20), 60) == 4  # 0..59 (or 10..61)
    assert window_count(times, t(130), 60) == 1
    assert window_count(times, t(61), 60) == 4  # 10..61 holds 10, 20, 59, 61
    assert window_count([], t(0), 60) == 0


def test_two_devices_are_no_incident() -> None:
    ev = s(0, "cm11")
    assert classify(ev, [s(1, "cm11")], TREE, [], [], CFG) is None


def test_fifty_of_one_street_open_one_incident_for_the_street() -> None:
    half = many(25, "cm11") + many(25, "cm12")
    ev = half[-1]
    d = classify(ev, half, TREE, [], [], CFG)
    assert isinstance(d, Open)
    assert d.area_station_id == "st1" and d.cause == "mass_offline" and d.devices == 50
    assert d.fold_from <= T0 and d.fold_to >= ev.at


def test_a_community_cluster_stays_in_the_community() -> None:
    cluster = [*many(30, "cm21"), s(900, "cm11")]  # one unrelated device elsewhere
    d = classify(cluster[0], cluster, TREE, [], [], CFG)
    assert isinstance(d, Open) and d.area_station_id == "cm21" and d.devices == 30


def test_two_streets_dark_at_once_are_one_county_incident() -> None:
    both = many(20, "cm11") + many(20, "cm21")
    d = classify(both[0], both, TREE, [], [], CFG)
    assert isinstance(d, Open) and d.area_station_id == "county" and d.devices == 40


def test_slow_trickle_is_not_a_cluster() -> None:
    trickle = [s(i, "cm11", 30.0 * i) for i in range(40)]  # one every 30 s: 2–3 per minute
    assert all(classify(x, trickle, TREE, [], [], CFG) is None for x in trickle)


def test_a_device_dropping_twice_counts_once() -> None:
    same = [Sighting("d1", "h1", "cm11", t(i)) for i in range(30)]
    assert cluster_area(same[0], same, TREE, CFG) is None


def test_disabled_decides_nothing() -> None:
    cluster = many(50, "cm11")
    assert classify(cluster[0], cluster, TREE, [], [], MassOfflineConfig(enabled=False)) is None


def test_observed_broker_outage_covers_the_whole_tree() -> None:
    outage = Outage(7, "gw-a", t(5), t(12))
    few = [s(0, "cm11", 4), s(1, "cm22", 13)]
    d = classify(few[0], few, TREE, [outage], [], CFG)
    assert isinstance(d, Open)
    assert d.area_station_id == "county" and d.cause == "broker_restart" and d.outage_id == 7
    assert d.fold_from == t(5 - 60) and d.fold_to == t(12 + 60)
    # the open incident takes every later will of the outage, wherever the home is
    inc = OpenIncident(99, "county", "broker_restart", 7, t(4))
    joined = classify(few[1], few, TREE, [outage], [inc], CFG)
    assert isinstance(joined, Join) and joined.call_id == 99
    # and a will explained by the outage long after the cluster stopped
    late = s(5, "cm21", 12 + 50)
    inc_old = OpenIncident(99, "county", "broker_restart", 7, t(-300))
    assert classify(late, [late], TREE, [outage], [inc_old], CFG) == Join(99, "broker_outage")


def test_outage_margin_and_open_outage() -> None:
    o = Outage(1, "gw", t(100), None)
    assert attributed_outage(t(39), [o], 60) is None
    assert attributed_outage(t(41), [o], 60) == o
    assert attributed_outage(t(3000), [o], 60) == o  # not back yet: open-ended …
    assert attributed_outage(t(100 + 3601), [o], 60) is None  # … for an hour at most
    assert attributed_outage(t(100 + 3601), [o], 60, open_max_s=7200) == o
    closed = Outage(2, "gw", t(100), t(110))
    assert attributed_outage(t(171), [closed], 60) is None
    assert attributed_outage(t(169), [closed], 60) == closed


def test_outage_needs_its_minimum() -> None:
    outage = Outage(7, "gw-a", t(5), t(12))
    cfg = MassOfflineConfig(outage_min_devices=3)
    few = [s(0, "cm11", 4), s(1, "cm22", 13)]
    assert classify(few[0], few, TREE, [outage], [], cfg) is None


def test_open_incident_takes_the_cluster_while_it_keeps_coming() -> None:
    inc = OpenIncident(5, "st1", "mass_offline", None, t(0))
    late = s(1, "cm12", 50)
    assert classify(late, [late], TREE, [], [inc], CFG) == Join(5, "cluster")
    much_later = s(2, "cm12", 3600)
    assert classify(much_later, [much_later], TREE, [], [inc], CFG) is None
    elsewhere = s(3, "cm21", 10)
    assert classify(elsewhere, [elsewhere], TREE, [], [inc], CFG) is None


def test_a_cluster_outgrowing_its_incident_opens_the_larger_one() -> None:
    inc = OpenIncident(5, "cm11", "mass_offline", None, t(0))
    county_wide = many(25, "cm11") + many(25, "cm12") + many(25, "cm21") + many(25, "cm22")
    d = classify(county_wide[3], county_wide, TREE, [], [inc], CFG)
    assert isinstance(d, Open) and d.area_station_id == "county"


def test_unknown_station_decides_nothing() -> None:
    ev = Sighting("d", "h", "gone", T0)
    assert classify(ev, many(50, "cm11"), TREE, [], [], CFG) is None


@settings(max_examples=300, deadline=None)
@given(
    offsets=st.lists(st.floats(0, 200, allow_nan=False), max_size=40),
    at=st.floats(0, 200, allow_nan=False),
    w=st.floats(1, 100, allow_nan=False),
)
def test_window_count_matches_brute_force(offsets: list[float], at: float, w: float) -> None:
    times = sorted(t(x) for x in offsets)
    a = t(at)
    span = timedelta(seconds=w)
    # the count only changes where a sighting meets an edge: try every such start
    edges = [a - span, a, *times, *(x - span for x in times)]
    starts = [e for e in edges if a - span <= e <= a]
    brute = max(sum(1 for x in times if s0 <= x <= s0 + span) for s0 in starts)
    assert window_count(times, a, w) == brute


stations_st = st.sampled_from(sorted(k for k in TREE if k.startswith("cm")))


@st.composite
def sightings(draw: st.DrawFn) -> list[Sighting]:
    n = draw(st.integers(0, 80))
    return [
        Sighting(
            f"d{draw(st.integers(0, 60))}",
            "h",
            draw(stations_st),
            t(draw(st.floats(0, 300, allow_nan=False))),
        )
        for _ in range(n)
    ]


@settings(max_examples=200, deadline=None)
@given(recent=sightings(), station=stations_st, at=st.floats(0, 300, allow_nan=False))
def test_properties(recent: list[Sighting], station: str, at: float) -> None:
    ev = Sighting("ev", "h", station, t(at))
    found = cluster_area(ev, recent, TREE, CFG)
    devices = {x.device_id for x in recent} | {"ev"}
    if found is None:
        # fewer distinct devices than the threshold can never be a cluster
        assert classify(ev, recent, TREE, [], [], CFG) is None
        return
    area, count = found
    # the area holds the event, and the count is a real count of distinct devices
    assert area in ancestors(TREE, station)
    assert CFG.min_devices <= count <= len(devices)
    d = classify(ev, recent, TREE, [], [], CFG)
    assert isinstance(d, Open) and d.area_station_id == area
    assert d.fold_from <= ev.at <= d.fold_to
    # a larger threshold never finds a smaller-or-equal cluster where a smaller one found none
    tighter = MassOfflineConfig(min_devices=count + 1)
    bigger = cluster_area(ev, recent, TREE, tighter)
    assert bigger is None or bigger[1] >= count + 1


@settings(max_examples=100, deadline=None)
@given(recent=sightings(), station=stations_st, at=st.floats(0, 300, allow_nan=False))
def test_fewer_devices_than_the_threshold_never_open(recent: list[Sighting], station: str, at: float) -> None:
    ev = Sighting("ev", "h", station, t(at))
    if len({x.device_id for x in recent} | {"ev"}) < CFG.min_devices:
        assert classify(ev, recent, TREE, [], [], CFG) is None


def test_config_is_validated_where_the_dispatch_file_is_loaded(tmp_path: Path) -> None:
    bad = tmp_path / "dispatch.yaml"
    bad.write_text("mass_offline: {min_device: 5}\n", encoding="utf-8")
    with pytest.raises(DispatchConfigError, match=r"mass_offline\.min_device"):
        load_dispatch_config(bad)
    bad.write_text("mass_offline: {min_devices: 1}\n", encoding="utf-8")
    with pytest.raises(DispatchConfigError, match=r"mass_offline\.min_devices"):
        load_dispatch_config(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("mass_offline: {enabled: false, window_s: 30}\n", encoding="utf-8")
    cfg = load_dispatch_config(ok).mass_offline
    assert not cfg.enabled and cfg.window_s == 30 and cfg.min_devices == 20

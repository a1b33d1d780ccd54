"""Station choice: each path through the tree, with the reason codes a supervisor reads."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from carecall.core.geo import great_circle_km
from dispatcher.calls.config_files import DispatchConfig, DispatchConfigError, load_dispatch_config
from dispatcher.calls.routing import (
    REASONS,
    RoutingConfig,
    StationNode,
    choose_station,
    escalation_target,
    parse_area,
    station_node,
    travel_minutes,
)
from dispatcher.calls.travel import DistanceEngine, OsrmEngine, make_engine

CFG = RoutingConfig()
REPO = Path(__file__).resolve().parents[3]


def node(
    id: str,
    tier: str,
    parent: str | None,
    staff: int = 1,
    lat: float = 32.68,
    lon: float = 112.83,
) -> StationNode:
    return StationNode(id, id, tier, parent, lat, lon, "urban", staff)  # type: ignore[arg-type]


def tree(**staff: int) -> dict[str, StationNode]:
    """county ─ street s1 ─ c1 (the home's), c2, c3; street s2 ─ c4."""
    counts = {"county": 1, "s1": 1, "s2": 1, "c1": 1, "c2": 1, "c3": 1, "c4": 1} | staff
    nodes = [
        node("county", "county", None, counts["county"]),
        node("s1", "street", "county", counts["s1"]),
        node("s2", "street", "county", counts["s2"]),
        node("c1", "community", "s1", counts["c1"]),
        node("c2", "community", "s1", counts["c2"]),
        node("c3", "community", "s1", counts["c3"]),
        node("c4", "community", "s2", counts["c4"]),
    ]
    return {n.id: n for n in nodes}


def route(
    stations: Mapping[str, StationNode],
    minutes: Mapping[str, float],
    *,
    from_device: bool = False,
    area: str = "urban",
    exclude: frozenset[str] = frozenset(),
    home: str = "c1",
) -> tuple[str | None, tuple[str, ...]]:
    d = choose_station(
        home_station_id=home,
        origin=(32.68, 112.83),
        origin_from_device=from_device,
        area=area,  # type: ignore[arg-type]
        stations=stations,
        travel_min=minutes,
        cfg=CFG,
        exclude=exclude,
    )
    for code in d.reasons:
        assert code in REASONS, code
    if d.station_id is not None:
        assert d.tier == stations[d.station_id].tier
    return d.station_id, d.reasons


NEAR = {"county": 25.0, "s1": 12.0, "s2": 20.0, "c1": 5.0, "c2": 8.0, "c3": 7.0, "c4": 9.0}


def test_own_station_staffed_in_range() -> None:
    assert route(tree(), NEAR) == ("c1", ("OWN_STATION_STAFFED_IN_RANGE",))


def test_own_station_unstaffed_goes_to_nearest_staffed_sibling() -> None:
    # c3 (7 min) beats c2 (8 min); c4 is nearer than both but under another street.
    got = route(tree(c1=0), NEAR | {"c4": 1.0})
    assert got == ("c3", ("OWN_STATION_UNSTAFFED", "NEAREST_STAFFED_IN_STREET"))


def test_own_station_out_of_range() -> None:
    got = route(tree(), NEAR | {"c1": 16.0})
    assert got == ("c3", ("OWN_STATION_OUT_OF_RANGE", "NEAREST_STAFFED_IN_STREET"))


def test_rural_limit_is_wider() -> None:
    assert route(tree(), NEAR | {"c1": 25.0}, area="rural")[0] == "c1"


def test_no_staffed_sibling_falls_back_to_street_then_county() -> None:
    got = route(tree(c1=0, c2=0, c3=0), NEAR)
    assert got == (
        "s1",
        ("OWN_STATION_UNSTAFFED", "NO_STAFFED_STATION_IN_RANGE", "STREET_CENTRE_FALLBACK"),
    )
    station, reasons = route(tree(c1=0, c2=0, c3=0, s1=0), NEAR | {"county": 40.0})
    assert station == "county"
    assert reasons == (
        "OWN_STATION_UNSTAFFED",
        "NO_STAFFED_STATION_IN_RANGE",
        "STREET_CENTRE_UNSTAFFED",
        "COUNTY_FALLBACK",
        "BEYOND_LIMIT",
    )


def test_watch_outside_the_home_routes_from_the_device() -> None:
    # The resident is in another street: c4 is nearest to the watch.
    away = {"c1": 40.0, "c2": 38.0, "c3": 39.0, "c4": 6.0, "s1": 35.0, "s2": 10.0}
    assert route(tree(), away, from_device=True) == (
        "c4",
        ("LOCATION_FROM_DEVICE", "NEAREST_STAFFED_TO_DEVICE"),
    )
    # Nobody staffed in range: the street centre of where the watch is, not of home.
    assert route(tree(c4=0), away, from_device=True) == (
        "s2",
        ("LOCATION_FROM_DEVICE", "NO_STAFFED_STATION_IN_RANGE", "STREET_CENTRE_FALLBACK"),
    )


def test_nobody_available() -> None:
    everyone = frozenset(tree())
    got = route(tree(), NEAR, exclude=everyone)
    assert got == (
        None,
        (
            "OWN_STATION_EXCLUDED",
            "NO_STAFFED_STATION_IN_RANGE",
            "STREET_CENTRE_EXCLUDED",
            "NO_STATION_AVAILABLE",
        ),
    )
    assert route({}, {}) == (
        None,
        ("OWN_STATION_UNKNOWN", "STREET_CENTRE_UNKNOWN", "NO_STATION_AVAILABLE"),
    )


def test_missing_travel_time_is_never_near() -> None:
    minutes = {k: v for k, v in NEAR.items() if k != "c1"}
    station, reasons = route(tree(), minutes)
    assert station == "c3"
    assert reasons[:2] == ("OWN_STATION_OUT_OF_RANGE", "TRAVEL_TIME_UNKNOWN")


def test_ties_break_by_station_id() -> None:
    assert route(tree(c1=0), NEAR | {"c2": 7.0, "c3": 7.0})[0] == "c2"


def test_escalation_excludes_tried_stations() -> None:
    assert route(tree(), NEAR, exclude=frozenset({"c1", "c2", "c3"}))[0] == "s1"
    assert route(tree(), NEAR, exclude=frozenset({"c1", "c2", "c3", "s1"}))[0] == "county"


def test_escalation_target() -> None:
    t = tree()
    assert escalation_target(t, "c2", "street") == "s1"
    assert escalation_target(t, "c2", "county") == "county"
    assert escalation_target(t, "s1", "street") == "s1"
    assert escalation_target(t, "county", "street") is None
    assert escalation_target(t, "nowhere", "county") is None


@given(
    staff=st.dictionaries(st.sampled_from(list(tree())), st.integers(0, 2)),
    minutes=st.dictionaries(st.sampled_from(list(tree())), st.floats(0, 60)),
    excluded=st.frozensets(st.sampled_from(list(tree()))),
    from_device=st.booleans(),
)
def test_any_pick_is_explained_and_respects_exclude(
    staff: dict[str, int], minutes: dict[str, float], excluded: frozenset[str], from_device: bool
) -> None:
    stations = tree(**staff)
    station, reasons = route(stations, minutes, from_device=from_device, exclude=excluded)
    assert reasons
    assert station not in excluded
    if station is None:
        assert reasons[-1] == "NO_STATION_AVAILABLE"
    elif stations[station].tier == "community":
        assert stations[station].on_duty_responders > 0
        assert minutes[station] <= CFG.urban_limit_min


def test_haversine_and_travel_minutes() -> None:
    # One degree of latitude is about 111.2 km.
    assert great_circle_km(32.0, 112.0, 33.0, 112.0) == pytest.approx(111.2, abs=0.2)
    assert travel_minutes(CFG, 10.0, "urban") == pytest.approx(10 * 1.3 / 20 * 60)
    assert travel_minutes(CFG, 10.0, "rural") == pytest.approx(10 * 1.3 / 40 * 60)


async def test_distance_engine() -> None:
    target = node("c1", "community", "s1", lat=32.69, lon=112.83)
    got = await DistanceEngine(CFG).minutes((32.68, 112.83), [target], "urban")
    assert got["c1"] == pytest.approx(
        travel_minutes(CFG, great_circle_km(32.68, 112.83, 32.69, 112.83), "urban")
    )


async def test_osrm_engine_reads_the_table_and_falls_back() -> None:
    seen: list[httpx.URL] = []

    def ok(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"code": "Ok", "durations": [[0, 300.0, None]]})

    targets = [node("a", "community", "s1", lat=32.69), node("b", "community", "s1", lat=32.70)]
    cfg = RoutingConfig(engine="osrm", osrm_url="http://osrm.test")
    engine = OsrmEngine("http://osrm.test/", cfg, client=httpx.AsyncClient(transport=httpx.MockTransport(ok)))
    got = await engine.minutes((32.68, 112.83), targets, "urban")
    assert got["a"] == 5.0
    assert got["b"] == pytest.approx(
        (await DistanceEngine(cfg).minutes((32.68, 112.83), targets, "urban"))["b"]
    )
    assert seen[0].path == "/table/v1/driving/112.830000,32.680000;112.830000,32.690000;112.830000,32.700000"
    assert seen[0].params["sources"] == "0" and seen[0].params["annotations"] == "duration"
    assert engine.failures == 0

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    broken = OsrmEngine(
        "http://osrm.test", cfg, client=httpx.AsyncClient(transport=httpx.MockTransport(down))
    )
    got = await broken.minutes((32.68, 112.83), targets, "urban")
    assert set(got) == {"a", "b"} and broken.failures == 1
    calls: list[int] = []

    def sized(request: httpx.Request) -> httpx.Response:
        n = request.url.path.rsplit("/", 1)[1].count(";")
        calls.append(n)
        return httpx.Response(200, json={"code": "Ok", "durations": [[0.0] + [60.0] * n]})

    many = [node(f"c{i:03}", "community", "s1") for i in range(250)]
    client = httpx.AsyncClient(transport=httpx.MockTransport(sized))
    got = await OsrmEngine("http://osrm.test", cfg, client=client).minutes((32.68, 112.83), many, "urban")
    assert calls == [99, 99, 52] and len(got) == 250 and set(got.values()) == {1.0}
    assert isinstance(make_engine(cfg), OsrmEngine)
    assert isinstance(make_engine(CFG), DistanceEngine)


def test_dispatch_yaml_matches_model_defaults() -> None:
    assert load_dispatch_config(REPO / "config" / "dispatch.yaml") == DispatchConfig()


def test_dispatch_yaml_bad_key_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "dispatch.yaml"
    bad.write_text(json.dumps({"routing": {"urban_limt_min": 10}}), encoding="utf-8")
    with pytest.raises(DispatchConfigError, match=r"routing\.urban_limt_min"):
        load_dispatch_config(bad)
    bad.write_text("routing: {engine: osrm}", encoding="utf-8")
    with pytest.raises(DispatchConfigError, match="osrm_url"):
        load_dispatch_config(bad)


def test_station_node_from_stored_strings() -> None:
    n = station_node(
        id="c1",
        name="c1",
        tier="community",
        parent_id="s1",
        lat=1.0,
        lon=2.0,
        area="rural",
        on_duty_responders=2,
    )
    assert n == StationNode("c1", "c1", "community", "s1", 1.0, 2.0, "rural", 2)
    with pytest.raises(ValueError, match="tier"):
        station_node(
            id="x",
            name="x",
            tier="town",
            parent_id=None,
            lat=0,
            lon=0,
            area="urban",
            on_duty_responders=0,
        )
    with pytest.raises(ValueError, match="area"):
        parse_area("suburban")

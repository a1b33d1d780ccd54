"""Routing a service order: nearest able candidate, reason codes, and properties that hold
for any set of candidates."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carecall.core.geo import great_circle_km
from dispatcher.orders.hours import ALWAYS, parse_hours
from dispatcher.orders.routing import REASONS, Candidate, RouteRequest, rejection, route

# 2026-12-07 02:00 UTC = 10:00 in Shanghai (Monday)
T_DAY = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
# 2026-12-07 15:00 UTC = 23:00 in Shanghai
T_NIGHT = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
HOME = (32.692, 112.852)


def cand(cid: str, dlat: float = 0.0, **changes: object) -> Candidate:
    base = Candidate(
        id=cid,
        type="provider",
        lat=HOME[0] + dlat,
        lon=HOME[1],
        kinds=frozenset({"meal", "cleaning"}),
        hours=ALWAYS,
        capacity=2,
        open_orders=0,
        radius_km=10.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def req(kind: str = "meal", at: datetime = T_DAY) -> RouteRequest:
    return RouteRequest(kind=kind, lat=HOME[0], lon=HOME[1], station_id="cm1", at=at)


def test_nearest_able_wins_and_the_others_say_why() -> None:
    cands = [
        cand("near-closed", 0.001, hours=parse_hours("08:00-09:00")),
        cand("near-full", 0.002, open_orders=2),
        cand("no-meals", 0.003, kinds=frozenset({"cleaning"})),
        cand("far-away", 0.5),
        cand("off", 0.004, active=False),
        cand("ok-far", 0.02),
        cand("ok-near", 0.01),
    ]
    d = route(req(), cands)
    assert d.chosen is not None and d.chosen.id == "ok-near"
    assert d.reasons == ("NEAREST_AVAILABLE",)
    assert d.distance_km == pytest.approx(great_circle_km(*HOME, HOME[0] + 0.01, HOME[1]))
    assert {(cid, why) for _, cid, why in d.passed_over} == {
        ("near-closed", "CLOSED"),
        ("near-full", "AT_CAPACITY"),
        ("no-meals", "KIND_NOT_OFFERED"),
        ("far-away", "OUT_OF_AREA"),
        ("off", "INACTIVE"),
    }
    assert {why for *_, why in d.passed_over} <= set(REASONS)


def test_station_list_serves_beyond_the_radius_and_overnight_hours_use_shanghai_time() -> None:
    night = cand(
        "night-owl", 0.5, radius_km=None, stations=frozenset({"cm1"}), hours=parse_hours("22:00-06:00")
    )
    assert route(req(at=T_NIGHT), [night]).chosen == night
    d = route(req(at=T_DAY), [night])
    assert d.chosen is None and d.reasons == ("NONE_AVAILABLE",)
    assert d.passed_over == (("provider", "night-owl", "CLOSED"),)


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        route(req(at=datetime(2026, 12, 7, 10)), [])


def test_ties_go_to_the_lower_type_and_id() -> None:
    a, b = cand("b", 0.01), cand("a", 0.01)
    station = cand("a", 0.01, type="station")
    assert route(req(), [a, b]).chosen == b
    assert route(req(), [station, b]).chosen == b  # "provider" < "station"


candidates = st.lists(
    st.builds(
        cand,
        cid=st.sampled_from(["p1", "p2", "p3", "p4", "p5", "p6"]),
        dlat=st.floats(-0.2, 0.2),
        kinds=st.frozensets(st.sampled_from(["meal", "cleaning", "chat"]), max_size=3),
        capacity=st.integers(1, 3),
        open_orders=st.integers(0, 3),
        radius_km=st.one_of(st.none(), st.floats(0.1, 30)),
        stations=st.frozensets(st.sampled_from(["cm1", "cm2"]), max_size=2),
        hours=st.sampled_from([ALWAYS, parse_hours("08:00-20:00"), parse_hours("22:00-06:00")]),
        active=st.booleans(),
    ),
    max_size=6,
    unique_by=lambda c: c.id,  # ids are primary keys
)


@settings(max_examples=200, deadline=None)
@given(
    candidates, st.sampled_from(["meal", "cleaning", "chat"]), st.sampled_from([T_DAY, T_NIGHT]), st.randoms()
)
def test_properties(cands: list[Candidate], kind: str, at: datetime, rnd: object) -> None:
    r = req(kind, at)
    d = route(r, cands)
    able = [c for c in cands if rejection(c, r, great_circle_km(r.lat, r.lon, c.lat, c.lon)) is None]
    # somebody is chosen exactly when somebody can take it, and the choice can take it
    assert (d.chosen is None) == (not able)
    if d.chosen is not None:
        assert d.chosen in able
        # nobody able is nearer
        assert all(great_circle_km(r.lat, r.lon, c.lat, c.lon) >= d.distance_km - 1e-9 for c in able)  # type: ignore[operator]
    # every candidate unable to take it is passed over with a known reason
    assert len(d.passed_over) == len(cands) - len(able)
    assert all(why in REASONS for *_, why in d.passed_over)
    # the answer does not depend on the order the candidates came in
    shuffled = list(cands)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert route(r, shuffled) == d

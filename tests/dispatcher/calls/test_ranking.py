"""Who to send: the send dialog's order (dispatcher/calls/ranking.py)."""

from __future__ import annotations

import pytest

from carecall.core.geo import great_circle_km
from dispatcher.calls.ranking import REASONS, Candidate, HomePoint, PersonState, rank_candidates
from dispatcher.calls.routing import RoutingConfig

CFG = RoutingConfig()
HOME = HomePoint(lat=30.0, lon=120.0, area="urban", station_id="own")
# about 111 m per 0.001° of latitude
NEAR = 30.002
FAR = 30.02


def person(
    staff_id: str,
    *,
    station: str = "own",
    lat: float = NEAR,
    on_duty: bool = True,
    marked_busy: bool = False,
    call_id: int | None = None,
) -> Candidate:
    return Candidate(
        staff_id=staff_id,
        name=f"name-{staff_id}",
        role="responder",
        phone="13800000000",
        station_id=station,
        station_name=f"station-{station}",
        lat=lat,
        lon=120.0,
        on_duty=on_duty,
        marked_busy=marked_busy,
        call_id=call_id,
    )


def order(people: list[Candidate], home: HomePoint = HOME) -> list[str]:
    return [r.staff_id for r in rank_candidates(home, people, CFG, call_id=7)]


def test_distance_and_eta_use_the_routing_estimate() -> None:
    [row] = rank_candidates(HOME, [person("a", lat=FAR)], CFG, call_id=7)
    km = great_circle_km(FAR, 120.0, 30.0, 120.0)
    assert row.distance_m == round(km * 1000) == 2224
    # 2.224 km × 1.3 road factor at 20 km/h = 8.67 min
    assert row.eta_s == round(km * 1.3 / 20.0 * 3600) == 520
    rural = HomePoint(lat=30.0, lon=120.0, area="rural", station_id="own")
    [slow] = rank_candidates(rural, [person("a", lat=FAR)], CFG, call_id=7)
    assert slow.eta_s == round(km * 1.3 / 40.0 * 3600)  # the countryside's own speed


def test_nearest_free_person_first() -> None:
    people = [person("far", station="n1", lat=FAR), person("near", station="n2", lat=NEAR)]
    assert order(people) == ["near", "far"]


def test_busy_after_free_and_off_duty_last_however_near() -> None:
    people = [
        person("off", lat=30.0001, on_duty=False),
        person("out", lat=30.0001, call_id=3),
        person("marked", lat=30.0001, marked_busy=True),
        person("free-far", station="n1", lat=30.2),
    ]
    rows = rank_candidates(HOME, people, CFG, call_id=7)
    assert [r.staff_id for r in rows] == ["free-far", "marked", "out", "off"]
    assert [r.state for r in rows] == [
        PersonState.free,
        PersonState.busy,
        PersonState.busy,
        PersonState.off_duty,
    ]
    assert rows[1].reasons[0] == "MARKED_BUSY"
    assert rows[2].reasons[0] == "ON_ANOTHER_CALL"
    assert rows[3].reasons == ("OFF_DUTY", "OWN_STATION")  # no time limit claim for the off duty
    assert rows[0].reasons == ("FREE", "BEYOND_LIMIT", "NEAREST")  # 22 km: beyond 15 minutes


def test_home_station_first_among_equals() -> None:
    # the neighbour is 50 m nearer: the same whole minute, so the home's own station leads
    people = [person("neighbour", station="n1", lat=30.0015), person("own", lat=30.002)]
    rows = rank_candidates(HOME, people, CFG, call_id=7)
    assert [r.staff_id for r in rows] == ["own", "neighbour"]
    assert rows[0].reasons == ("FREE", "OWN_STATION", "WITHIN_LIMIT", "NEAREST")
    # a whole minute nearer wins over the home's station
    people = [person("neighbour", station="n1", lat=30.0005), person("own", lat=30.02)]
    assert order(people) == ["neighbour", "own"]


def test_exact_ties_are_stable_by_station_then_id() -> None:
    people = [person("b", station="x"), person("a", station="x"), person("c", station="own")]
    assert order(people) == ["c", "a", "b"]
    assert order(list(reversed(people))) == ["c", "a", "b"]


def test_someone_already_on_this_call_says_so() -> None:
    rows = rank_candidates(HOME, [person("a", call_id=7), person("b")], CFG, call_id=7)
    assert [(r.staff_id, r.state, r.reasons[0]) for r in rows] == [
        ("b", PersonState.free, "FREE"),
        ("a", PersonState.busy, "ON_THIS_CALL"),
    ]


def test_nobody_free_means_nobody_is_called_nearest() -> None:
    rows = rank_candidates(HOME, [person("a", on_duty=False), person("b", call_id=2)], CFG, call_id=7)
    assert all("NEAREST" not in r.reasons for r in rows)
    assert rank_candidates(HOME, [], CFG, call_id=7) == []


def test_every_reason_is_documented() -> None:
    people = [
        person("a"),
        person("b", station="n", lat=31.0),
        person("c", on_duty=False),
        person("d", marked_busy=True),
        person("e", call_id=2),
        person("f", call_id=7),
    ]
    used = {code for r in rank_candidates(HOME, people, CFG, call_id=7) for code in r.reasons}
    assert used == set(REASONS)


@pytest.mark.parametrize(
    ("home", "lat"),
    [
        (HomePoint(lat=30.0, lon=120.0, area="lunar", station_id="own"), NEAR),
        (HomePoint(lat=95.0, lon=120.0, area="urban", station_id="own"), NEAR),
        (HOME, float("nan")),
    ],
)
def test_bad_data_is_refused_clearly(home: HomePoint, lat: float) -> None:
    with pytest.raises(ValueError, match=r"area|position"):
        rank_candidates(home, [person("a", lat=lat)], CFG, call_id=7)

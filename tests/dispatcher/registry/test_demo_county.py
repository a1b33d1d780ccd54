from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

from carecall.core.geo import great_circle_km
from dispatcher.registry.demo_county import (
    FAR_HOMES,
    REFERENCE_DATE,
    SEAT_LAT,
    SEAT_LON,
    DemoCounty,
    generate_demo_county,
)
from dispatcher.registry.models import StationKind, Tier
from dispatcher.registry.schemas import StaffRole


def test_counts_follow_tanghe_plan(county: DemoCounty) -> None:
    kinds = Counter(s.kind for s in county.stations)
    assert kinds[StationKind.county_centre] == 1
    assert kinds[StationKind.street_centre] == 6
    assert kinds[StationKind.day_care_centre] == 28
    assert kinds[StationKind.home_care_point] + kinds[StationKind.village_point] == 50
    assert kinds[StationKind.village_point] > 0
    assert len(county.homes) == 210
    assert all(s.area == "rural" for s in county.stations if s.kind is StationKind.village_point)


def test_generation_is_deterministic(county: DemoCounty) -> None:
    assert generate_demo_county() == county
    assert generate_demo_county(seed=7) != county


def test_tree_is_consistent(county: DemoCounty) -> None:
    by_id = {s.id: s for s in county.stations}
    assert len(by_id) == len(county.stations)
    for station in county.stations:
        if station.tier is Tier.county:
            assert station.parent_id is None
        else:
            assert station.parent_id is not None
            parent = by_id[station.parent_id]
            expected = Tier.county if station.tier is Tier.street else Tier.street
            assert parent.tier is expected
    community = {s.id for s in county.stations if s.tier is Tier.community}
    assert all(h.station_id in community for h in county.homes)


def test_geography_is_plausible(county: DemoCounty) -> None:
    by_id = {s.id: s for s in county.stations}
    for station in county.stations:
        if station.tier is Tier.street:
            assert great_circle_km(SEAT_LAT, SEAT_LON, station.lat, station.lon) <= 15
        elif station.tier is Tier.community:
            parent = by_id[station.parent_id or ""]
            assert great_circle_km(parent.lat, parent.lon, station.lat, station.lon) <= 3
    far = [
        h
        for h in county.homes
        if great_circle_km(by_id[h.station_id].lat, by_id[h.station_id].lon, h.lat, h.lon) > 1.5
    ]
    assert len(far) == FAR_HOMES
    assert all(h.area == by_id[h.station_id].area for h in county.homes)
    assert all(h.address.startswith("唐河县") for h in county.homes)


def test_residents_and_contacts(county: DemoCounty) -> None:
    per_home = Counter(r.home_id for r in county.residents)
    assert set(per_home) == {h.id for h in county.homes}
    assert set(per_home.values()) <= {1, 2}
    assert {r.capacity_level for r in county.residents} == {0, 1, 2, 3, 4}
    assert sum(r.living_alone for r in county.residents) > 40
    for resident in county.residents:
        age = (REFERENCE_DATE - resident.birth_date) / timedelta(days=365.25)
        assert 60 <= age <= 98
        assert 1 <= len(resident.contacts) <= 3
        assert [c.priority for c in resident.contacts] == list(range(1, len(resident.contacts) + 1))
        assert all(re.fullmatch(r"1[3-9]\d{9}", c.phone) for c in resident.contacts)
        if resident.living_alone:
            assert per_home[resident.home_id] == 1


def test_devices_per_home(county: DemoCounty) -> None:
    per_home: dict[str, list[str]] = {h.id: [] for h in county.homes}
    for device in county.devices:
        assert device.id == f"{device.home_id}-{device.kind.value}"
        per_home[device.home_id].append(device.kind.value)
    for kinds in per_home.values():
        assert 1 <= len(kinds) <= 4
        assert "hub" in kinds or "button" in kinds


def test_staff_ratio(county: DemoCounty) -> None:
    operators = Counter(s.station_id for s in county.staff if s.role is StaffRole.operator)
    minimum = {Tier.county: 6, Tier.street: 3, Tier.community: 3}
    for station in county.stations:
        assert operators[station.id] >= minimum[station.tier], station.id
        staff = [s for s in county.staff if s.station_id == station.id]
        assert any(s.role is StaffRole.responder for s in staff)
        if station.tier is not Tier.community:
            assert any(s.on_duty and s.role is StaffRole.operator for s in staff)
    duty = Counter(s.on_duty for s in county.staff)
    assert duty[True] > 0 and duty[False] > 0


def test_demo_homes_and_residents_carry_phones_and_hand_off_facts(county: DemoCounty) -> None:
    homes, residents = county.homes, county.residents
    assert 0.7 <= sum(1 for h in homes if h.phone) / len(homes) < 0.95  # most homes have a fixed line
    assert 0.3 <= sum(1 for r in residents if r.phone) / len(residents) <= 0.6  # many a mobile
    for share, field in ((0.5, "medications"), (0.15, "allergies"), (0.3, "access_notes")):
        assert sum(1 for r in residents if getattr(r, field)) / len(residents) >= share, field
    assert any("钥匙在邻居" in r.access_notes for r in residents)
    assert any("密码箱" in r.access_notes for r in residents)
    # every generated value passes the same validation a file import applies
    for row in [*homes, *residents]:
        assert type(row).model_validate(row.model_dump()) == row
    again = generate_demo_county()
    assert [(r.phone, r.medications, r.allergies, r.access_notes) for r in again.residents] == [
        (r.phone, r.medications, r.allergies, r.access_notes) for r in residents
    ]
    assert [h.phone for h in again.homes] == [h.phone for h in homes]

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from device_gateway.kinds import DEFAULT_HEARTBEAT_S, DeviceKind
from dispatcher.registry.models import Tier
from dispatcher.registry.schemas import (
    EXPORT_COLUMNS,
    DeviceRow,
    ResidentRow,
    StaffRow,
    StationRow,
    encode_contacts,
)

STATION: dict[str, Any] = {
    "id": "st1",
    "name": "滨河街道综合养老服务中心",
    "kind": "street_centre",
    "tier": "street",
    "parent_id": "county",
    "lat": "32.67",
    "lon": "112.83",
}
RESIDENT: dict[str, Any] = {
    "id": "r1",
    "home_id": "h1",
    "name": "王秀英",
    "sex": "F",
    "birth_date": "1940-03-01",
    "capacity_level": "2",
}


def test_station_tier_must_match_kind() -> None:
    with pytest.raises(ValidationError, match="does not match kind"):
        StationRow.model_validate({**STATION, "tier": "community"})


def test_station_tier_is_filled_from_kind() -> None:
    row = StationRow.model_validate({k: v for k, v in STATION.items() if k != "tier"})
    assert row.tier is Tier.street


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "county_centre", "tier": "county"}, "no parent"),
        ({"parent_id": ""}, "needs parent_id"),
        ({"parent_id": "st1"}, "own parent"),
        ({"lat": "95"}, "less than or equal to 90"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"id": "bad id!"}, "should match pattern"),
    ],
)
def test_station_shape_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StationRow.model_validate({**STATION, **changes})


def test_staff_role_and_chinese_flags() -> None:
    row = StaffRow.model_validate(
        {"id": "s1", "station_id": "st1", "name": "李娜", "role": "operator", "on_duty": "是"}
    )
    assert row.on_duty is True
    with pytest.raises(ValidationError, match="role"):
        StaffRow.model_validate({"id": "s1", "station_id": "st1", "name": "李娜", "role": "cook"})


def test_resident_cells_decode() -> None:
    row = ResidentRow.model_validate(
        {
            **RESIDENT,
            "sex": "女",
            "living_alone": "否",
            "conditions": "高血压、糖尿病；冠心病",
            "contacts": "王强/儿子/13812345678； 李丽／邻居／0377-61234567",
        }
    )
    assert row.sex == "F" and row.living_alone is False
    assert row.conditions == ["高血压", "糖尿病", "冠心病"]
    assert [(c.name, c.relation, c.priority) for c in row.contacts] == [
        ("王强", "儿子", 1),
        ("李丽", "邻居", 2),
    ]
    assert encode_contacts(row.contacts) == "王强/儿子/13812345678; 李丽/邻居/0377-61234567"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"capacity_level": "7"}, "less than or equal to 4"),
        ({"birth_date": "1850-01-01"}, "not plausible"),
        ({"sex": "X"}, "sex"),
        ({"contacts": "王强/13812345678"}, "name/relation/phone"),
        ({"contacts": "王强/儿子/call me"}, "phone"),
        ({"hr_min": "90", "hr_max": "60"}, "must be below"),
    ],
)
def test_resident_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ResidentRow.model_validate({**RESIDENT, **changes})


def test_resident_blank_vitals_are_none() -> None:
    row = ResidentRow.model_validate({**RESIDENT, "hr_min": "", "rr_max": None})
    assert row.hr_min is None and row.rr_max is None
    assert row.birth_date == date(1940, 3, 1)


def test_device_heartbeat_defaults_by_kind() -> None:
    button = DeviceRow.model_validate({"id": "h1-button", "home_id": "h1", "kind": "button"})
    assert button.heartbeat_s == DEFAULT_HEARTBEAT_S[DeviceKind.button]
    hub = DeviceRow.model_validate({"id": "h1-hub", "home_id": "h1", "kind": "hub", "heartbeat_s": "30"})
    assert hub.heartbeat_s == 30


def test_device_secret_is_never_exported_or_shown() -> None:
    row = DeviceRow.model_validate({"id": "h1-hub", "home_id": "h1", "kind": "hub", "secret": "s" * 20})
    assert "secret" not in EXPORT_COLUMNS["devices"]
    assert "secret" not in row.model_dump()
    assert "s" * 20 not in repr(row)
    with pytest.raises(ValidationError, match="at least 16"):
        DeviceRow.model_validate({"id": "h1-hub", "home_id": "h1", "kind": "hub", "secret": "short"})


def test_device_errors() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        DeviceRow.model_validate({"id": "h1/hub", "home_id": "h1", "kind": "hub"})
    with pytest.raises(ValidationError, match="kind") as info:
        DeviceRow.model_validate({"id": "h1-x", "home_id": "h1", "kind": "toaster"})
    # An unknown kind is one clear error, not also a missing heartbeat.
    assert len(info.value.errors()) == 1


@pytest.mark.parametrize(
    ("cell", "stored"),
    [
        ("night, day", "day night"),
        ("Day；night day", "day night"),
        (["night"], "night"),
        ("", ""),
        (None, ""),
    ],
)
def test_staff_shifts_are_normalised(cell: Any, stored: str) -> None:
    row = StaffRow.model_validate(
        {"id": "s1", "station_id": "st1", "name": "李娜", "role": "responder", "shifts": cell}
    )
    assert row.shifts == stored


def test_staff_shift_names_must_be_words() -> None:
    with pytest.raises(ValidationError, match="lowercase word"):
        StaffRow.model_validate(
            {"id": "s1", "station_id": "st1", "name": "李娜", "role": "responder", "shifts": "早班"}
        )


def test_new_fields_phones_hand_off_facts_and_channels() -> None:
    from dispatcher.registry.schemas import HomeRow, ResidentRow, StaffRow, encode_contacts

    home = HomeRow.model_validate(
        {
            "id": "h1",
            "station_id": "cm1",
            "address": "建设路1号",
            "lat": 32.7,
            "lon": 112.8,
            "phone": " 0377-6123  4567 ",
        }
    )
    assert home.phone == "0377-6123 4567"
    resident = ResidentRow.model_validate(
        {
            "id": "r1",
            "home_id": "h1",
            "name": "王秀英",
            "sex": "女",
            "birth_date": "1940-03-01",
            "capacity_level": 2,
            "phone": 13812345678,  # an Excel number cell
            "medications": " 阿司匹林 ",
            "access_notes": "门口密码箱，密码问社区站",
            "contacts": "王强/儿子/13812345678/SMS, voice；李梅/女儿/13712345678",
        }
    )
    assert (resident.phone, resident.medications, resident.allergies) == ("13812345678", "阿司匹林", "")
    assert [c.channels for c in resident.contacts] == ["sms voice", ""]
    assert encode_contacts(resident.contacts) == "王强/儿子/13812345678/sms voice; 李梅/女儿/13712345678"
    staff = StaffRow.model_validate(
        {"id": "s1", "station_id": "cm1", "name": "李", "role": "nurse", "channels": ["voice", "app"]}
    )
    assert staff.channels == "voice app"  # the order given is kept

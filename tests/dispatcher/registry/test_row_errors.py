"""Row problems in plain words: what a county clerk reads for each kind of bad cell."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from dispatcher.registry.files import RowError
from dispatcher.registry.row_errors import error_dicts, error_table, row_errors
from dispatcher.registry.schemas import DeviceRow, HomeRow, ResidentRow, StaffRow

HOME = {"id": "h1", "station_id": "cm1", "address": "建设路1号", "lat": "32.7", "lon": "112.8"}
RESIDENT = {
    "id": "r1",
    "home_id": "h1",
    "name": "王秀英",
    "sex": "F",
    "birth_date": "1940-03-01",
    "capacity_level": "2",
}


def errors_of(model: type[BaseModel], data: dict[str, str]) -> list[RowError]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return row_errors("f.csv", 7, info.value)


@pytest.mark.parametrize(
    ("model", "data", "column", "value", "reason"),
    [
        (HomeRow, {**HOME, "lat": "north"}, "lat", "north", "not a number"),
        (HomeRow, {**HOME, "lat": "95"}, "lat", "95", "must be at most 90"),
        (HomeRow, {**HOME, "id": "h 1!"}, "id", "h 1!", "an id is 1 to 64 letters, digits, _ or -"),
        (HomeRow, {k: v for k, v in HOME.items() if k != "address"}, "address", None, "required, but the cell is empty"),
        (HomeRow, {**HOME, "area": "town"}, "area", "town", "expected one of 'urban' or 'rural'"),
        (HomeRow, {**HOME, "phone": "1" * 41}, "phone", "1" * 41, "a phone number has 40 characters at most"),
        (HomeRow, {**HOME, "phone": "ext. 12"}, "phone", "ext. 12", "a phone number is digits, an optional leading +, spaces or dashes"),
        (ResidentRow, {**RESIDENT, "birth_date": "1.3.1940"}, "birth_date", "1.3.1940", "not a date; write it as YYYY-MM-DD"),
        (ResidentRow, {**RESIDENT, "capacity_level": "two"}, "capacity_level", "two", "not a whole number"),
        (ResidentRow, {**RESIDENT, "living_alone": "maybe"}, "living_alone", "maybe", "expected true/false (or 是/否)"),
        (ResidentRow, {**RESIDENT, "allergies": "x" * 1001}, "allergies", "x" * 1001, "too long: 1000 characters at most"),
        (StaffRow, {"id": "s1", "station_id": "cm1", "name": "李", "role": "nurse", "channels": "app fax"}, "channels", "app fax", "unknown channel 'fax'; channels are sms, voice, robot, email, app"),
        (StaffRow, {"id": "s1", "station_id": "cm1", "name": "李", "role": "nurse", "channels": "sms sms"}, "channels", "sms sms", "channel 'sms' is listed twice"),
    ],
)  # fmt: skip
def test_each_problem_reads_as_plain_words(
    model: type[BaseModel], data: dict[str, str], column: str, value: str | None, reason: str
) -> None:
    (error,) = errors_of(model, data)
    assert (error.column, error.value, error.reason) == (column, value, reason)
    assert "Value error" not in error.reason and "Input should" not in error.reason


def test_a_contact_problem_names_the_contact_and_a_secret_is_never_echoed() -> None:
    (error,) = errors_of(ResidentRow, {**RESIDENT, "contacts": "王强/儿子/13812345678; 李梅/女儿/call-me"})
    assert error.column == "contacts" and error.reason.startswith("contact 2 phone: a phone number")
    bad_channel = errors_of(ResidentRow, {**RESIDENT, "contacts": "王强/儿子/13812345678/pager"})
    assert (
        bad_channel[0].reason
        == "contact 1 channels: unknown channel 'pager'; channels are sms, voice, robot, email, app"
    )
    (secret,) = errors_of(DeviceRow, {"id": "d1", "home_id": "h1", "kind": "hub", "secret": "short"})
    assert secret.column == "secret" and secret.value is None


def test_the_table_and_the_json_carry_the_same_problems() -> None:
    errors = [
        RowError("homes.csv", 3, "not a number", "lat", "北纬三十二度四十一分" * 3),
        RowError("homes.csv", 0, "empty"),
    ]
    table = error_table(errors).splitlines()
    assert table[0].split() == ["file", "row", "column", "value", "reason"]
    assert "…" in table[1] and table[1].endswith("not a number")
    assert table[2].split() == ["homes.csv", "empty"]
    assert error_dicts(errors)[1] == {
        "file": "homes.csv",
        "row": 0,
        "column": None,
        "value": None,
        "reason": "empty",
        "code": None,
        "params": {},
    }

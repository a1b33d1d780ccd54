"""Registry problems as codes: each code has its English sentence (what the command line
prints, unchanged) and an entry in both console catalogues with the same parameters, and
the errors a file produces carry the code and parameters the console words."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from dispatcher.registry.files import RegistryImportError, RowError, Sheet, check_header, kind_of
from dispatcher.registry.reasons import REASONS, english
from dispatcher.registry.row_errors import error_dicts, row_errors
from dispatcher.registry.schemas import HomeRow, ResidentRow, StationRow

CATALOGUES = Path(__file__).resolve().parents[3] / "dispatcher" / "console" / "static" / "i18n"
LANGS = ("en", "zh-CN")
RESIDENT = {
    "id": "r1",
    "home_id": "h1",
    "name": "王秀英",
    "sex": "F",
    "birth_date": "1940-03-01",
    "capacity_level": "2",
}


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def catalogue(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((CATALOGUES / f"{lang}.json").read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("lang", LANGS)
def test_every_code_is_in_the_catalogue_with_its_parameters(lang: str) -> None:
    messages = catalogue(lang)
    for code, template in REASONS.items():
        key = f"importer.reason.{code}"
        assert key in messages, key
        assert fields(messages[key]) == fields(template), (lang, code)
    assert fields(messages["importer.reason.at_contact"]) == {"contact", "field", "reason"}
    assert fields(messages["importer.reason.at"]) == {"at", "reason"}


def test_the_chinese_catalogue_says_it_in_chinese() -> None:
    zh = catalogue("zh-CN")
    for code in REASONS:
        assert re.search(r"[\u4e00-\u9fff]", zh[f"importer.reason.{code}"]), code


def test_the_english_sentences_are_the_command_line_s() -> None:
    assert english("duplicate_id", {"row": 4}) == "duplicate id (also on row 4)"
    assert english("unknown_ref", {"noun": "station", "ref": "x9", "kind": "stations"}) == (
        "unknown station 'x9' (import stations first)"
    )
    assert (
        english("unsupported_type", {"suffix": ".txt"}) == "unsupported file type '.txt'; use .csv or .xlsx"
    )
    with pytest.raises(ValueError, match="duplicate_id"):
        english("duplicate_id", {})
    with pytest.raises(ValueError, match="no_such_code"):
        english("no_such_code", {})


def test_a_coded_error_keeps_its_english_text_and_its_parameters() -> None:
    error = RowError.of("homes.csv", 3, "duplicate_id", "id", "h1", row=2)
    assert error == RowError("homes.csv", 3, "duplicate id (also on row 2)", "id", "h1")
    assert str(error) == "homes.csv:3: id: duplicate id (also on row 2)"
    assert error_dicts([error])[0] == {
        "file": "homes.csv",
        "row": 3,
        "column": "id",
        "value": "h1",
        "reason": "duplicate id (also on row 2)",
        "code": "duplicate_id",
        "params": {"row": 2},
    }


def errors_of(model: type[BaseModel], data: dict[str, str]) -> list[RowError]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return row_errors("f.csv", 7, info.value)


def test_cell_problems_carry_codes() -> None:
    home = {"id": "h1", "station_id": "cm1", "address": "建设路1号", "lat": "north", "lon": "112.8"}
    (lat,) = errors_of(HomeRow, home)
    assert (lat.code, lat.params, lat.reason) == ("not_number", {}, "not a number")
    (phone,) = errors_of(HomeRow, {**home, "lat": "32.7", "phone": "打电话给我"})
    assert phone.code == "phone_format" and phone.reason == REASONS["phone_format"]
    (far,) = errors_of(HomeRow, {**home, "lat": "91"})
    assert (far.code, far.params, far.reason) == ("at_most", {"bound": 90}, "must be at most 90")


def test_a_contact_s_problem_names_the_contact_as_parameters() -> None:
    (error,) = errors_of(ResidentRow, {**RESIDENT, "contacts": "王强/儿子/13812345678; 李梅/女儿/call-me"})
    assert error.reason.startswith("contact 2 phone: a phone number")
    assert error.code in ("phone_format", "phone_pattern")
    assert error.params["contact"] == 2 and error.params["field"] == "phone"


def test_header_and_file_problems_carry_codes() -> None:
    with pytest.raises(RegistryImportError) as info:
        check_header("homes", Sheet(["name", "colour", "name"], []), "homes.csv")
    assert [e.code for e in info.value.errors] == [
        "first_column_id",
        "unknown_column",
        "unknown_column",
        "unknown_column",
        "repeated_columns",
    ]
    assert info.value.errors[0].reason == "the first column must be 'id', found 'name'"
    assert info.value.errors[1].params["column"] == "name"
    with pytest.raises(RegistryImportError) as info:
        kind_of(Path("people.csv"))
    assert info.value.errors[0].code == "kind_from_name"


def test_the_schemas_own_rules_are_coded_too() -> None:
    (channel,) = errors_of(ResidentRow, {**RESIDENT, "contacts": "王强/儿子/13812345678/pager"})
    assert channel.code == "unknown_channel" and channel.params["channel"] == "pager"
    assert channel.params["contact"] == 1 and channel.params["field"] == "channels"
    assert (
        channel.reason
        == "contact 1 channels: unknown channel 'pager'; channels are sms, voice, robot, email, app"
    )
    (birth,) = errors_of(ResidentRow, {**RESIDENT, "birth_date": "1850-01-01"})
    assert (birth.code, birth.params) == ("birth_date", {"date": "1850-01-01"})
    (form,) = errors_of(ResidentRow, {**RESIDENT, "contacts": "王强 13812345678"})
    assert form.code == "contact_form" and form.params["number"] == 1 and "contact" not in form.params
    station = {
        "id": "s1",
        "name": "某站",
        "kind": "county_centre",
        "tier": "street",
        "lat": "32.6",
        "lon": "112.8",
    }
    (tier,) = errors_of(StationRow, station)
    assert tier.code == "tier_kind" and tier.params == {
        "tier": "street",
        "kind": "county_centre",
        "expected": "county",
    }
    assert (
        tier.reason == "tier 'street' does not match kind 'county_centre' (a county_centre is tier 'county')"
    )

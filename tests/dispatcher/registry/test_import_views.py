"""The registry's new fields over HTTP (phones, hand-off facts, channel orders) and the
console's file import: admins only, all-or-nothing, every problem as JSON."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from dispatcher.registry.models import Contact, Home, Resident, Staff
from tests.dispatcher.registry import test_views
from tests.dispatcher.registry.test_views import Api

# the registry API's fixtures (a small registry, an admin, an operator, a supervisor)
api = test_views.api
cheap_hashing = test_views.cheap_hashing

HOMES_OK = "id,station_id,address,lat,lon,phone\nh7,cm1,建设路7号,32.69,112.85,0377-6123 4567\n"
HOMES_BAD = (
    "id,station_id,address,lat,lon,phone\n"
    "h7,cm1,建设路7号,32.69,112.85,0377-6123 4567\n"
    "h8,cm1,建设路8号,32.69,112.85,打电话给我\n"
    "h9,nowhere,建设路9号,32.69,112.85,\n"
)


async def upload(api: Api, who: str, filename: str, body: bytes, **query: str) -> tuple[int, Any]:
    r = await api.client.post(
        "/api/v1/registry/import",
        params={"filename": filename, **query},
        content=body,
        headers={**api.as_(who), "Content-Type": "application/octet-stream"},
    )
    return r.status_code, r.json()


async def homes(api: Api) -> int:
    async with api.maker() as s:
        return int(await s.scalar(select(func.count()).select_from(Home)) or 0)


async def test_admin_imports_a_file_from_the_console(api: Api) -> None:
    status, body = await upload(api, "admin", "homes.csv", HOMES_OK.encode())
    assert status == 200, body
    assert body == {
        "status": "applied",
        "files": [
            {"file": "homes.csv", "kind": "homes", "status": "applied", "rows": 1, "created": 1, "updated": 0}
        ],
    }
    async with api.maker() as s:
        home = await s.get(Home, "h7")
        assert home is not None and home.phone == "0377-6123 4567"


async def test_operator_may_not_import(api: Api) -> None:
    before = await homes(api)
    status, _ = await upload(api, "op", "homes.csv", HOMES_OK.encode())
    assert status == 403
    assert await homes(api) == before


async def test_a_bad_file_answers_422_with_every_row_error_and_writes_nothing(api: Api) -> None:
    before = await homes(api)
    status, body = await upload(api, "admin", "homes.csv", HOMES_BAD.encode())
    assert status == 422
    detail = body["detail"]
    assert "nothing was written" in detail["message"]
    assert [(e["row"], e["column"], e["value"]) for e in detail["errors"]] == [
        (3, "phone", "打电话给我"),
        (4, "station_id", "nowhere"),
    ]
    assert detail["errors"][0]["reason"].startswith("a phone number is digits")
    assert detail["files"][0]["status"] == "failed"
    assert await homes(api) == before  # the good row h7 was not written either


async def test_file_level_problems_are_422_too(api: Api) -> None:
    status, body = await upload(api, "admin", "notes.txt", b"id\nx\n")
    assert status == 422 and body["detail"]["errors"][0]["row"] == 0
    status, body = await upload(api, "admin", "../homes.csv", HOMES_OK.encode())
    assert status == 422 and "plain file name" in body["detail"]
    status, body = await upload(api, "admin", "homes.csv", b"")
    assert status == 422
    status, body = await upload(api, "admin", "h.csv", HOMES_OK.encode(), kind="homes")
    assert status == 200, body


async def test_new_fields_round_trip_and_are_validated(api: Api) -> None:
    r = await api.patch(
        "admin",
        "/api/v1/residents/r1",
        {
            "phone": "+86 138-1234-5678",
            "medications": "硝苯地平 10mg 每日两次",
            "allergies": "青霉素",
            "access_notes": "钥匙在邻居王阿姨家 (302)",
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["phone"], out["allergies"], out["access_notes"]) == (
        "+86 138-1234-5678",
        "青霉素",
        "钥匙在邻居王阿姨家 (302)",
    )
    r = await api.patch("admin", "/api/v1/residents/r1", {"phone": "call me"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "phone"
    r = await api.patch("admin", "/api/v1/residents/r1", {"medications": "x" * 1001})
    assert r.status_code == 422
    r = await api.patch("admin", "/api/v1/homes/h1", {"phone": "0377 612 345"})
    assert r.status_code == 200 and r.json()["phone"] == "0377 612 345"
    r = await api.patch("admin", "/api/v1/staff/s1", {"channels": "app, SMS voice"})
    assert r.status_code == 200 and r.json()["channels"] == "app sms voice"
    r = await api.patch("admin", "/api/v1/staff/s1", {"channels": "app pigeon"})
    assert r.status_code == 422 and "unknown channel 'pigeon'" in r.text
    r = await api.put(
        "admin",
        "/api/v1/residents/r1/contacts",
        [
            {
                "name": "王强",
                "relation": "儿子",
                "phone": "13812345678",
                "priority": 1,
                "channels": "sms voice",
            }
        ],
    )
    assert r.status_code == 200 and r.json()["contacts"][0]["channels"] == "sms voice"
    # the console's contact editor knows no channels: saving keeps each contact's own
    r = await api.put(
        "op",
        "/api/v1/residents/r1/contacts",
        [
            {"name": "王强", "relation": "儿子", "phone": "13812345678", "priority": 2},
            {"name": "李梅", "relation": "女儿", "phone": "13712345678", "priority": 1},
        ],
    )
    assert r.status_code == 200, r.text
    assert [(c["name"], c["channels"]) for c in r.json()["contacts"]] == [("李梅", ""), ("王强", "sms voice")]
    r = await api.put(
        "admin",
        "/api/v1/residents/r1/contacts",
        [
            {
                "name": "王强",
                "relation": "儿子",
                "phone": "13812345678",
                "priority": 1,
                "channels": "sms voice",
            }
        ],
    )
    assert r.status_code == 200
    async with api.maker() as s:
        staff = await s.get(Staff, "s1")
        contact = await s.scalar(select(Contact).where(Contact.resident_id == "r1"))
        resident = await s.get(Resident, "r1")
        assert staff is not None and staff.channels == "app sms voice"
        assert contact is not None and contact.channels == "sms voice"
        assert resident is not None and resident.medications == "硝苯地平 10mg 每日两次"


async def test_supervisors_see_no_hand_off_facts_and_a_masked_mobile(api: Api) -> None:
    r = await api.patch(
        "admin",
        "/api/v1/residents/r1",
        {
            "phone": "13812345678",
            "medications": "阿司匹林",
            "allergies": "青霉素",
            "access_notes": "密码箱 1234",
        },
    )
    assert r.status_code == 200, r.text
    r = await api.get("sup", "/api/v1/residents/r1")
    assert r.status_code == 200
    out = r.json()
    assert (out["medications"], out["allergies"], out["access_notes"]) == ("", "", "")
    assert out["phone"] != "13812345678" and out["phone"].endswith("5678")
    r = await api.get("op", "/api/v1/residents/r1")
    assert r.json()["access_notes"] == "密码箱 1234"

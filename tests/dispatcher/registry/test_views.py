"""Registry API: roles, station scopes, one-time device secrets, validation and conflicts.

The registry used here (on top of tests.conftest's county → st1 → cm1 chain):

    county ─ st1 ─ cm1 ─ h1 (r1, d1)        staff s1 at cm1
           └ st2 ─ cm2 ─ h2 (d2)             staff s2 at cm2
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.app import create_app
from device_gateway.credentials import hash_secret
from device_gateway.models import Device
from dispatcher.auth import passwords as auth
from dispatcher.auth.models import Role, User
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user, ensure_admin
from dispatcher.auth.views import auth_router
from dispatcher.registry.models import Home, Staff, Station
from dispatcher.registry.views import registry_router
from tests.conftest import add_small_registry

Maker = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
SIGNER = TokenSigner(b"s" * 32)


@dataclass
class Api:
    client: httpx.AsyncClient
    maker: Maker
    tokens: dict[str, str]

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def get(self, who: str, url: str, **kw: object) -> httpx.Response:
        return await self.client.get(url, headers=self.as_(who), **kw)  # type: ignore[arg-type]

    async def post(self, who: str, url: str, body: object = None) -> httpx.Response:
        return await self.client.post(url, headers=self.as_(who), json=body)

    async def patch(self, who: str, url: str, body: object) -> httpx.Response:
        return await self.client.patch(url, headers=self.as_(who), json=body)

    async def put(self, who: str, url: str, body: object) -> httpx.Response:
        return await self.client.put(url, headers=self.as_(who), json=body)

    async def delete(self, who: str, url: str) -> httpx.Response:
        return await self.client.delete(url, headers=self.as_(who))


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production argon2 parameters cost ~0.2 s a hash; these tests are about access rules."""
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
async def api(maker: Maker) -> AsyncIterator[Api]:
    await add_small_registry(maker, {"d1": "button"}, secret_hashes={"d1": hash_secret("x" * 20)})
    async with maker() as s, s.begin():
        s.add_all(
            [
                Station(
                    id="st2",
                    name="二街道",
                    tier="street",
                    kind="street_centre",
                    parent_id="county",
                    lat=32.7,
                    lon=112.9,
                ),
                Station(
                    id="cm2",
                    name="二社区",
                    tier="community",
                    kind="community_station",
                    parent_id="st2",
                    lat=32.71,
                    lon=112.91,
                ),
            ]
        )
        await s.flush()
        s.add_all(
            [
                Home(id="h2", station_id="cm2", address="人民路2号", lat=32.71, lon=112.91),
                Staff(id="s1", station_id="cm1", name="李护士", role="nurse"),
                Staff(id="s2", station_id="cm2", name="赵医生", role="doctor"),
            ]
        )
        await s.flush()
        s.add(Device(id="d2", home_id="h2", kind="smoke", heartbeat_s=60, created_at=NOW))
    await ensure_admin(maker, password="admin-password", now=NOW)
    tokens: dict[str, str] = {}
    async with maker() as s, s.begin():
        admin = await s.scalar(select(User).where(User.username == "admin"))
        assert admin is not None
        tokens["admin"] = SIGNER.issue(admin.id, datetime.now(UTC))
        for name, role, station in (
            ("op", Role.operator, "cm1"),
            ("sup", Role.supervisor, "cm1"),
            ("street_op", Role.operator, "st1"),
        ):
            user = await create_user(
                s,
                username=name,
                password="password-1",
                role=role,
                station_id=station,
                display_name=name,
                now=NOW,
            )
            tokens[name] = SIGNER.issue(user.id, datetime.now(UTC))
    app = create_app(maker)
    app.include_router(auth_router(maker, SIGNER))
    app.include_router(registry_router(maker, SIGNER))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(client, maker, tokens)


def _ids(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


async def test_every_endpoint_needs_a_token(api: Api) -> None:
    r = await api.client.get("/api/v1/stations")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await api.client.post("/api/v1/devices", json={"id": "x", "home_id": "h1", "kind": "hub"})
    assert r.status_code == 401


async def test_admin_creates_station_home_device_and_sees_secret_once(api: Api) -> None:
    r = await api.post(
        "admin",
        "/api/v1/stations",
        {
            "id": "cm3",
            "name": "三社区",
            "kind": "home_care_point",
            "parent_id": "st1",
            "lat": 32.69,
            "lon": 112.86,
            "phone": "0377-61234567",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["tier"] == "community"  # derived from the kind
    assert set(r.json()) >= {
        "id",
        "name",
        "tier",
        "kind",
        "parent_id",
        "lat",
        "lon",
        "address",
        "phone",
        "area",
    }

    r = await api.post(
        "admin",
        "/api/v1/homes",
        {
            "id": "h3",
            "station_id": "cm3",
            "address": "幸福路3号",
            "lat": 32.69,
            "lon": 112.86,
            "area": "rural",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["area"] == "rural"

    r = await api.post("admin", "/api/v1/devices", {"id": "hub3", "home_id": "h3", "kind": "hub"})
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created.pop("secret")
    assert len(secret) >= 16
    # the embedded broker reads the registry itself: nothing to install, nothing to report
    assert created.pop("broker_error") is None
    assert created == {
        "id": "hub3",
        "home_id": "h3",
        "kind": "hub",
        "model": "",
        "heartbeat_s": 60,
        "enabled": True,
    }

    shown = (await api.get("admin", "/api/v1/devices/hub3")).json()
    assert shown == created  # no secret, no hash
    listed = (await api.get("admin", "/api/v1/devices", params={"home_id": "h3"})).json()
    assert listed["items"] == [created]

    r = await api.post("admin", "/api/v1/devices", {"id": "hub3", "home_id": "h3", "kind": "hub"})
    assert r.status_code == 409 and "rekey" in r.json()["detail"]
    r = await api.post("admin", "/api/v1/devices/hub3/rekey")
    assert r.status_code == 200 and r.json()["secret"] not in ("", secret)

    # the community operator of cm1 does not see the new sibling community
    assert (await api.get("op", "/api/v1/stations/cm3")).status_code == 404
    assert (await api.get("street_op", "/api/v1/devices/hub3")).status_code == 200


async def test_operator_sees_only_its_subtree(api: Api) -> None:
    assert _ids(await api.get("op", "/api/v1/stations")) == ["cm1"]
    assert _ids(await api.get("op", "/api/v1/homes")) == ["h1"]
    assert _ids(await api.get("op", "/api/v1/devices")) == ["d1"]
    assert _ids(await api.get("op", "/api/v1/staff")) == ["s1"]
    assert _ids(await api.get("op", "/api/v1/residents")) == ["r1"]
    assert _ids(await api.get("street_op", "/api/v1/stations")) == ["cm1", "st1"]
    assert _ids(await api.get("admin", "/api/v1/stations")) == [
        "cm1",
        "cm2",
        "county",
        "st1",
        "st2",
    ]
    # narrowing to a station outside the scope shows nothing rather than an error
    assert _ids(await api.get("op", "/api/v1/homes", params={"station_id": "cm2"})) == []
    assert _ids(await api.get("admin", "/api/v1/homes", params={"station_id": "st2"})) == ["h2"]

    for url in (
        "/stations/cm2",
        "/stations/st1",
        "/stations/county",
        "/homes/h2",
        "/devices/d2",
        "/staff/s2",
        "/stations/does-not-exist",
    ):
        r = await api.get("op", "/api/v1" + url)
        assert r.status_code == 404, url
    # out of scope and nonexistent look the same
    gone = (await api.get("op", "/api/v1/devices/nope")).json()["detail"]
    hidden = (await api.get("op", "/api/v1/devices/d2")).json()["detail"]
    assert gone.replace("nope", "X") == hidden.replace("d2", "X")
    assert (await api.get("op", "/api/v1/residents/r1")).json()["name"] == "王秀英"


async def test_paging(api: Api) -> None:
    r = await api.get("admin", "/api/v1/stations", params={"limit": 2, "offset": 1})
    assert r.json() == {**r.json(), "total": 5, "limit": 2, "offset": 1}
    assert _ids(r) == ["cm2", "county"]
    assert (await api.get("admin", "/api/v1/stations", params={"limit": 501})).status_code == 422
    assert (await api.get("admin", "/api/v1/stations", params={"offset": -1})).status_code == 422


async def test_operator_toggles_duty_and_device_in_scope(api: Api) -> None:
    r = await api.patch("op", "/api/v1/staff/s1", {"on_duty": True})
    assert r.status_code == 200 and r.json()["on_duty"] is True
    r = await api.patch("op", "/api/v1/devices/d1", {"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    async with api.maker() as s:
        assert (await s.get(Device, "d1")).enabled is False  # type: ignore[union-attr]
        assert (await s.get(Staff, "s1")).on_duty is True  # type: ignore[union-attr]

    assert (await api.patch("op", "/api/v1/staff/s2", {"on_duty": True})).status_code == 404
    assert (await api.patch("op", "/api/v1/devices/d2", {"enabled": False})).status_code == 404
    r = await api.patch("op", "/api/v1/staff/s1", {"name": "改名"})
    assert r.status_code == 403 and "needs an admin" in r.json()["detail"]
    # the roster is an admin's to change; names are normalised like an import's
    assert (await api.patch("op", "/api/v1/staff/s1", {"shifts": "night"})).status_code == 403
    r = await api.patch("admin", "/api/v1/staff/s1", {"shifts": "night, day"})
    assert r.status_code == 200 and r.json()["shifts"] == "day night"
    assert (await api.patch("admin", "/api/v1/staff/s1", {"shifts": "夜班"})).status_code == 422
    r = await api.patch("op", "/api/v1/devices/d1", {"heartbeat_s": 600})
    assert r.status_code == 403
    assert (await api.post("op", "/api/v1/devices/d1/rekey")).status_code == 403
    r = await api.post(
        "op",
        "/api/v1/stations",
        {
            "id": "x",
            "name": "x",
            "kind": "village_point",
            "parent_id": "st1",
            "lat": 1,
            "lon": 1,
        },
    )
    assert r.status_code == 403


async def test_operator_edits_contacts_in_scope(api: Api) -> None:
    contacts = [
        {"name": "王强", "relation": "儿子", "phone": "13812345678", "priority": 2},
        {"name": "王丽", "relation": "女儿", "phone": "13912345678", "priority": 1},
    ]
    r = await api.put("op", "/api/v1/residents/r1/contacts", contacts)
    assert r.status_code == 200, r.text
    assert [c["name"] for c in r.json()["contacts"]] == ["王丽", "王强"]
    r = await api.get("sup", "/api/v1/residents/r1")
    assert [c["priority"] for c in r.json()["contacts"]] == [1, 2]

    clash = [{**contacts[0], "priority": 1}, contacts[1]]
    assert (await api.put("op", "/api/v1/residents/r1/contacts", clash)).status_code == 422
    bad_phone = [{**contacts[0], "phone": "call me"}]
    r = await api.put("op", "/api/v1/residents/r1/contacts", bad_phone)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "phone"


async def test_supervisor_reads_but_cannot_change(api: Api) -> None:
    assert _ids(await api.get("sup", "/api/v1/staff")) == ["s1"]
    for call in (
        api.patch("sup", "/api/v1/staff/s1", {"on_duty": True}),
        api.patch("sup", "/api/v1/devices/d1", {"enabled": False}),
        api.put("sup", "/api/v1/residents/r1/contacts", []),
        api.delete("sup", "/api/v1/devices/d1"),
    ):
        r = await call
        assert r.status_code == 403
        assert "role" in r.json()["detail"]


async def test_validation_errors_name_the_field(api: Api) -> None:
    r = await api.post(
        "admin",
        "/api/v1/homes",
        {
            "id": "h9",
            "station_id": "nowhere",
            "address": "x",
            "lat": 32.0,
            "lon": 112.0,
        },
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "station_id"]
    assert "unknown station 'nowhere'" in r.json()["detail"][0]["msg"]

    r = await api.post("admin", "/api/v1/devices", {"id": "d9", "home_id": "nohome", "kind": "hub"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "home_id"]
    r = await api.post("admin", "/api/v1/devices", {"id": "d9", "home_id": "h1", "kind": "toaster"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"]
    r = await api.post("admin", "/api/v1/devices", {"id": "bad id!", "home_id": "h1", "kind": "hub"})
    assert r.status_code == 422

    r = await api.post(
        "admin",
        "/api/v1/stations",
        {
            "id": "cm9",
            "name": "x",
            "tier": "street",
            "kind": "village_point",
            "parent_id": "st1",
            "lat": 32.0,
            "lon": 112.0,
        },
    )
    assert r.status_code == 422 and "does not match kind" in r.json()["detail"][0]["msg"]
    r = await api.post(
        "admin",
        "/api/v1/stations",
        {
            "id": "cm9",
            "name": "x",
            "kind": "village_point",
            "parent_id": "county",
            "lat": 32.0,
            "lon": 112.0,
        },
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "parent_id"]
    r = await api.post(
        "admin",
        "/api/v1/homes",
        {
            "id": "h9",
            "station_id": "cm1",
            "address": "x",
            "lat": 95,
            "lon": 112.0,
        },
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lat"]

    r = await api.patch("admin", "/api/v1/residents/r1", {"hr_min": 120, "hr_max": 60})
    assert r.status_code == 422 and "hr_min" in r.json()["detail"][0]["msg"]
    r = await api.patch("admin", "/api/v1/staff/s1", {"station_id": "nowhere"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "station_id"]
    r = await api.patch("admin", "/api/v1/devices/d1", {"enabled": None})
    assert r.status_code == 422
    r = await api.patch("admin", "/api/v1/staff/s1", {"surprise": 1})
    assert r.status_code == 422


async def test_admin_patches_and_deletes_with_conflicts(api: Api) -> None:
    r = await api.patch("admin", "/api/v1/stations/cm2", {"kind": "village_point"})
    assert r.status_code == 200 and r.json()["kind"] == "village_point"
    r = await api.patch("admin", "/api/v1/stations/st2", {"kind": "village_point", "parent_id": "st1"})
    assert r.status_code == 409 and "child station" in r.json()["detail"]
    r = await api.patch("admin", "/api/v1/homes/h2", {"station_id": "cm1", "notes": "钥匙在门卫"})
    assert r.status_code == 200 and r.json()["station_id"] == "cm1"
    assert "h2" in _ids(await api.get("op", "/api/v1/homes"))

    r = await api.delete("admin", "/api/v1/stations/cm1")
    assert r.status_code == 409
    assert "home(s)" in r.json()["detail"] and "staff member(s)" in r.json()["detail"]
    assert (await api.delete("admin", "/api/v1/homes/h1")).status_code == 409
    assert (
        await api.post(
            "admin",
            "/api/v1/stations",
            {
                "id": "cm1",
                "name": "dup",
                "kind": "village_point",
                "parent_id": "st1",
                "lat": 1,
                "lon": 1,
            },
        )
    ).status_code == 409

    assert (await api.delete("admin", "/api/v1/devices/d2")).status_code == 204
    assert (await api.delete("admin", "/api/v1/staff/s2")).status_code == 204
    assert (await api.delete("admin", "/api/v1/stations/cm2")).status_code == 204
    assert (await api.get("admin", "/api/v1/stations/cm2")).status_code == 404


async def test_users_are_admin_only(api: Api) -> None:
    assert (await api.get("op", "/api/v1/users")).status_code == 403
    assert (await api.get("sup", "/api/v1/users")).status_code == 403
    r = await api.post(
        "admin",
        "/api/v1/users",
        {
            "username": "night",
            "password": "night-shift-1",
            "role": "operator",
            "station_id": "cm2",
            "display_name": "夜班",
        },
    )
    assert r.status_code == 201, r.text
    assert "password_hash" not in r.json() and "password" not in r.json()
    login = await api.client.post(
        "/api/v1/auth/token", data={"username": "night", "password": "night-shift-1"}
    )
    assert login.status_code == 200

    r = await api.post(
        "admin",
        "/api/v1/users",
        {
            "username": "night",
            "password": "night-shift-1",
            "role": "operator",
            "station_id": "cm2",
        },
    )
    assert r.status_code == 409
    r = await api.post(
        "admin",
        "/api/v1/users",
        {
            "username": "x",
            "password": "long-enough",
            "role": "operator",
        },
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "station_id"]
    r = await api.post(
        "admin",
        "/api/v1/users",
        {
            "username": "y",
            "password": "short",
            "role": "admin",
        },
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "password"]

    users = (await api.get("admin", "/api/v1/users")).json()["items"]
    admin_id = next(u["id"] for u in users if u["username"] == "admin")
    r = await api.patch("admin", f"/api/v1/users/{admin_id}", {"active": False})
    assert r.status_code == 409 and "last active admin" in r.json()["detail"]
    assert (await api.delete("admin", f"/api/v1/users/{admin_id}")).status_code == 409

    night_id = next(u["id"] for u in users if u["username"] == "night")
    r = await api.patch("admin", f"/api/v1/users/{night_id}", {"active": False})
    assert r.status_code == 200 and r.json()["active"] is False
    night_token = login.json()["access_token"]
    r = await api.client.get("/api/v1/stations", headers={"Authorization": f"Bearer {night_token}"})
    assert r.status_code == 401  # disabling takes effect on the next request


async def test_records_a_call_points_at_are_never_deleted(api: Api) -> None:
    """The calls domain's rows (named by table, not imported) keep a station, a home and a
    staff member from being deleted: a call's history must never lose its place."""
    from datetime import UTC, datetime

    from dispatcher.calls.models import Assignment, Call

    async with api.maker() as s, s.begin():
        s.add(Staff(id="s9", station_id="cm2", name="孙", role="responder", on_duty=True))
        s.add(Home(id="h9", station_id="cm2", address="九号", lat=1.0, lon=1.0))
        await s.flush()
        call = Call(
            status="resolved",
            priority="P1",
            event_class="emergency",
            home_id="h9",
            station_id="cm2",
            lat=1.0,
            lon=1.0,
            last_event_at=datetime(2026, 12, 6, tzinfo=UTC),
        )
        s.add(call)
        await s.flush()
        s.add(Assignment(call_id=call.id, staff_id="s9", active=False, state="released"))
    r = await api.delete("admin", "/api/v1/homes/h9")
    assert r.status_code == 409 and "call(s)" in r.json()["detail"]
    r = await api.delete("admin", "/api/v1/staff/s9")
    assert r.status_code == 409 and "call assignment(s)" in r.json()["detail"]
    r = await api.delete("admin", "/api/v1/stations/cm2")
    assert r.status_code == 409 and "call(s)" in r.json()["detail"]

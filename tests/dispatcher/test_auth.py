"""Passwords, tokens, the secret key, the first admin, scopes and the sign-in endpoints."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher import auth
from dispatcher.api import create_app
from dispatcher.auth import (
    Principal,
    TokenSigner,
    auth_router,
    create_user,
    ensure_admin,
    hash_password,
    in_scope,
    load_principal,
    load_secret_key,
    verify_password,
)
from dispatcher.models import Role, User
from tests.conftest import add_small_registry

Maker = async_sessionmaker[AsyncSession]
SECRET = b"k" * 32
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


# ------------------------------------------------------------------ passwords


def test_password_hash_verifies_and_rejects() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse") == (True, None)
    assert verify_password(stored, "wrong horse") == (False, None)
    assert verify_password("not a hash", "correct horse") == (False, None)


def test_weak_hash_is_upgraded_on_verify() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw-123456")
    ok, new_hash = verify_password(weak, "pw-123456")
    assert ok and new_hash is not None and new_hash != weak
    assert verify_password(new_hash, "pw-123456") == (True, None)


# ------------------------------------------------------------------ tokens


def test_token_roundtrip_and_expiry() -> None:
    signer = TokenSigner(SECRET, ttl_s=60)
    token = signer.issue(7, NOW)
    assert signer.verify(token, NOW) == 7
    assert signer.verify(token, NOW + timedelta(seconds=59)) == 7
    assert signer.verify(token, NOW + timedelta(seconds=60)) is None
    assert TokenSigner(b"o" * 32).verify(token, NOW) is None  # another secret


def _forge(token: str, **changes: int) -> str:
    body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    new_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{new_body}.{sig}"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: _forge(t, sub=1),
        lambda t: _forge(t, exp=2_000_000_000),
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.split(".")[0],
        lambda t: "",
        lambda t: "a.b.c",
        lambda t: "é.é",
    ],
)
def test_tampered_tokens_are_refused(mangle: object) -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue(7, NOW)
    assert callable(mangle)
    assert signer.verify(mangle(token), NOW) is None


def test_signer_refuses_short_secret() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        TokenSigner(b"short")


def test_secret_key_from_env_or_shared_file(tmp_path: Path) -> None:
    assert load_secret_key(environ={"CARECALL_SECRET_KEY": "e" * 40}) == b"e" * 40
    assert load_secret_key(configured="c" * 32, environ={"CARECALL_SECRET_KEY": "e" * 40}) == (b"c" * 32)
    with pytest.raises(ValueError, match="CARECALL_SECRET_KEY"):
        load_secret_key(environ={"CARECALL_SECRET_KEY": "too-short"})
    path = tmp_path / "carecall-secret.key"
    first = load_secret_key(environ={}, path=path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret_key(environ={}, path=path) == first  # a second copy shares it
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


# ------------------------------------------------------------------ users and scope


@pytest.fixture
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production argon2 parameters cost ~0.2 s a hash; the tests below are not about them."""
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.mark.usefixtures("cheap_hashing")
async def test_ensure_admin_creates_once(maker: Maker) -> None:
    password = await ensure_admin(maker, password=None, now=NOW)
    assert password is not None and len(password) >= 12
    assert await ensure_admin(maker, password="another-password", now=NOW) is None
    async with maker() as s:
        users = (await s.scalars(select(User))).all()
    assert [(u.username, u.role, u.station_id) for u in users] == [("admin", "admin", None)]
    assert verify_password(users[0].password_hash, password)[0]


@pytest.mark.usefixtures("cheap_hashing")
async def test_ensure_admin_uses_given_password(maker: Maker) -> None:
    assert await ensure_admin(maker, password="from-the-env-1", now=NOW) == "from-the-env-1"
    with pytest.raises(ValueError, match="at least 8"):
        await ensure_admin(maker, password="short", now=NOW)


@pytest.mark.usefixtures("cheap_hashing")
async def test_create_user_checks_input(maker: Maker) -> None:
    await add_small_registry(maker, {})
    async with maker() as s, s.begin():
        with pytest.raises(ValueError, match="needs station_id"):
            await create_user(
                s,
                username="op",
                password="password-1",
                role="operator",
                station_id=None,
                display_name="",
                now=NOW,
            )
        with pytest.raises(ValueError, match="unknown station"):
            await create_user(
                s,
                username="op",
                password="password-1",
                role="operator",
                station_id="nope",
                display_name="",
                now=NOW,
            )
        with pytest.raises(ValueError, match="unknown role"):
            await create_user(
                s,
                username="op",
                password="password-1",
                role="root",
                station_id="cm1",
                display_name="",
                now=NOW,
            )
        await create_user(
            s,
            username="王芳",
            password="password-1",
            role=Role.operator,
            station_id="cm1",
            display_name="王芳",
            now=NOW,
        )
        with pytest.raises(ValueError, match="taken"):
            await create_user(
                s,
                username="王芳",
                password="password-1",
                role=Role.operator,
                station_id="cm1",
                display_name="",
                now=NOW,
            )
        assert await s.scalar(select(func.count()).select_from(User)) == 1


@pytest.mark.usefixtures("cheap_hashing")
async def test_scope_is_the_station_subtree(maker: Maker) -> None:
    await add_small_registry(maker, {})
    async with maker() as s, s.begin():
        ids = {}
        for name, role, station in (
            ("adm", Role.admin, None),
            ("cty", Role.supervisor, "county"),
            ("str", Role.supervisor, "st1"),
            ("com", Role.operator, "cm1"),
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
            ids[name] = user.id
        scopes = {name: (await load_principal(s, uid)) for name, uid in ids.items()}
        assert all(isinstance(p, Principal) for p in scopes.values())
        assert {n: p.scope if p else "missing" for n, p in scopes.items()} == {
            "adm": None,
            "cty": None,
            "str": frozenset({"st1", "cm1"}),
            "com": frozenset({"cm1"}),
        }
        com = scopes["com"]
        assert com is not None and in_scope(com, "cm1") and not in_scope(com, "st1")
        assert not in_scope(com, None)
        (await s.get(User, ids["com"])).active = False  # type: ignore[union-attr]
        await s.flush()
        assert await load_principal(s, ids["com"]) is None
        assert await load_principal(s, 9999) is None


# ------------------------------------------------------------------ HTTP


@pytest.fixture
async def client(maker: Maker, cheap_hashing: None) -> AsyncIterator[httpx.AsyncClient]:
    signer = TokenSigner(SECRET)
    app = create_app(maker)
    app.include_router(auth_router(maker, signer))
    await add_small_registry(maker, {})
    await ensure_admin(maker, password="admin-password", now=NOW)
    async with maker() as s, s.begin():
        await create_user(
            s,
            username="op",
            password="op-password",
            role=Role.operator,
            station_id="cm1",
            display_name="Operator",
            now=NOW,
        )
        off = await create_user(
            s,
            username="gone",
            password="gone-password",
            role=Role.operator,
            station_id="cm1",
            display_name="",
            now=NOW,
        )
        off.active = False
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
    )


async def test_login_and_me(client: httpx.AsyncClient) -> None:
    r = await _login(client, "op", "op-password")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 12 * 3600
    assert body["user"]["username"] == "op" and "password_hash" not in body["user"]
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["scope"] == ["cm1"] and me.json()["user"]["role"] == "operator"

    admin = (
        await client.post("/api/v1/auth/token", json={"username": "admin", "password": "admin-password"})
    ).json()
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {admin['access_token']}"})
    assert me.json()["scope"] is None


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("op", "wrong-password", "wrong username or password"),
        ("nobody", "op-password", "wrong username or password"),
        ("gone", "gone-password", "disabled"),
    ],
)
async def test_bad_logins_are_401(
    client: httpx.AsyncClient, username: str, password: str, message: str
) -> None:
    r = await _login(client, username, password)
    assert r.status_code == 401
    assert message in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


async def test_login_form_must_be_complete(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/auth/token", data={"username": "op"})).status_code == 422
    r = await client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "username": "op", "password": "op-password"},
    )
    assert r.status_code == 422


async def test_missing_expired_and_tampered_tokens_are_401(client: httpx.AsyncClient) -> None:
    signer = TokenSigner(SECRET)
    r = await client.get("/api/v1/auth/me")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    expired = signer.issue(1, datetime.now(UTC) - timedelta(hours=13))
    tampered = _forge(signer.issue(1, datetime.now(UTC)), sub=2)
    foreign = TokenSigner(b"z" * 32).issue(1, datetime.now(UTC))
    for token in (expired, tampered, foreign, "garbage"):
        r = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
        assert r.headers["www-authenticate"] == "Bearer"
        assert "sign in again" in r.json()["detail"]
    fresh = signer.issue(1, datetime.now(UTC))
    r = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {fresh}"})
    assert r.status_code == 200 and r.json()["user"]["username"] == "admin"

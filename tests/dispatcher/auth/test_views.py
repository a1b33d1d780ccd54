"""The sign-in endpoints: sign in, ``/me``, bad logins, incomplete forms, bad tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.app import create_app
from dispatcher.auth.models import Role
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user, ensure_admin
from dispatcher.auth.views import auth_router
from tests.conftest import add_small_registry
from tests.dispatcher.auth.test_tokens import _forge

Maker = async_sessionmaker[AsyncSession]
SECRET = b"k" * 32
NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


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

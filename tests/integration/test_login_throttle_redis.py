"""Sign-in throttling shared through Redis: two copies of the API (two apps, as two
``carecall serve`` processes would be) count one address's failed sign-ins together,
and an account lock made through one copy holds in the other (shared database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.app import create_app
from dispatcher.auth import passwords as auth
from dispatcher.auth.lockout import LoginPolicy
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import create_user
from tests.conftest import add_small_registry

pytestmark = pytest.mark.integration


async def test_copies_share_failed_sign_in_counts_through_redis(
    pg_maker: async_sessionmaker[AsyncSession], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    await add_small_registry(pg_maker, {})
    async with pg_maker() as s, s.begin():
        await create_user(
            s,
            username="op",
            password="op-password",
            role="operator",
            station_id="cm1",
            display_name="",
            now=datetime.now(UTC),
        )
    policy = LoginPolicy(
        max_failures=4,
        lock_s=300,
        throttle_ip="6/minute",
        throttle_user="50/minute",
        redis_url=redis_url,
        key_prefix=f"carecall-test-{uuid.uuid4().hex[:8]}",
    )
    signer = TokenSigner(b"r" * 32)
    apps = [create_app(pg_maker, signer=signer, login_policy=policy) for _ in range(2)]
    address = ("10.77.0.1", 40000)
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a, client=address), base_url="http://test")
        for a in apps
    ]
    try:
        codes = []
        for i in range(8):  # alternate copies, a new unknown username each time
            r = await clients[i % 2].post("/api/v1/auth/token", data={"username": f"g{i}", "password": "x"})
            codes.append(r.status_code)
        assert codes == [401] * 6 + [429, 429], codes
        # another address is not affected; the account lock is per account, in the database
        other = [
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=a, client=("10.77.0.2", 1)), base_url="http://test"
            )
            for a in apps
        ]
        for i in range(4):
            r = await other[i % 2].post("/api/v1/auth/token", data={"username": "op", "password": "wrong"})
        assert r.status_code == 423, r.text
        r = await other[0].post("/api/v1/auth/token", data={"username": "op", "password": "op-password"})
        assert r.status_code == 423 and "locked" in r.json()["detail"]
        for c in other:
            await c.aclose()
    finally:
        for c in clients:
            await c.aclose()

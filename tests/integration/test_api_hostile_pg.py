"""The hostile-input sweep of every route (tests/carecall/shell/test_openapi_hostile.py) on
PostgreSQL, which refuses NUL bytes in text: before the request middleware, a NUL in a
path, a query or a username reached it and the request answered 500."""

from __future__ import annotations

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.auth import passwords as auth
from tests.carecall.shell.test_openapi_hostile import hostile_app, sweep

pytestmark = pytest.mark.integration


async def test_no_route_answers_5xx_on_postgresql(
    pg_maker: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    app, password = await hostile_app(pg_maker)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        r = await c.post("/api/v1/auth/token", data={"username": "sweep-admin", "password": password})
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert await sweep(c, app, headers) > 150
        # a NUL in a username at sign-in, the original report, in both encodings
        for kwargs in ({"data": {"username": "sweep\x00", "password": "x"}}, {"json": {"username": "a\x00"}}):
            r = await c.post("/api/v1/auth/token", **kwargs)  # type: ignore[arg-type]
            assert r.status_code == 422, r.text

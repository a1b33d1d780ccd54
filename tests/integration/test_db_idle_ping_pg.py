"""Pooled PostgreSQL connections are pinged only after sitting idle (carecall/core/db.py,
``ping_when_idle``), not at every checkout as ``pool_pre_ping`` did: that was one round
trip more for every transaction of every loop (the ``;`` a bench sample of PostgreSQL's
backends showed in 15 % of its samples). A connection the server dropped while it sat
idle is still replaced before anyone uses it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

from carecall.core.db import make_engine, make_sessionmaker
from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.integration


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    seen: list[int] = []
    real = AsyncAdapt_asyncpg_connection.ping

    def ping(self: AsyncAdapt_asyncpg_connection) -> None:
        seen.append(1)
        real(self)

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", ping)
    yield seen


async def test_a_busy_connection_is_not_pinged_an_idle_dropped_one_is_replaced(
    pg_url: str, pings: list[int]
) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0, ping_idle_s=0.3)
    maker = make_sessionmaker(engine)
    try:
        pids = []
        for _ in range(5):
            async with maker() as s:
                pids.append(await s.scalar(text("SELECT pg_backend_pid()")))
        assert len(set(pids)) == 1, "one pooled connection"
        assert pings == [], "used moments ago: no ping"

        # the server drops the connection while it sits in the pool (a restart, a kill)
        admin = await asyncpg.connect(PG_ADMIN_URL)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pids[0])
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
        async with maker() as s:
            pid = await s.scalar(text("SELECT pg_backend_pid()"))
        assert pings, "idle longer than 0.3 s: pinged at checkout"
        assert pid != pids[0], "the dead connection was replaced, and the session never saw it"
    finally:
        await engine.dispose()

"""Real services for integration tests: Mosquitto, PostgreSQL and Redis on 127.0.0.1.

In CI (CI=true) a missing service is a failure, never a skip. On a machine without them
the tests skip, naming what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.migrate import upgrade

MOSQUITTO = ("127.0.0.1", 1883)
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
PG_ADMIN_URL = os.environ.get("CARECALL_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


def _reachable(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1):
            return True
    except OSError:
        return False


def require(name: str, addr: tuple[str, int]) -> None:
    if _reachable(addr):
        return
    msg = f"{name} is not reachable on {addr[0]}:{addr[1]}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} (CI must run integration tests against the real service)")
    pytest.skip(f"{msg}: integration test needs the real service")


@pytest.fixture
def mosquitto() -> tuple[str, int]:
    require("Mosquitto", MOSQUITTO)
    return MOSQUITTO


@pytest.fixture
def redis_url() -> str:
    require("Redis", REDIS)
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test, migrated by Alembic, dropped afterwards."""
    require("PostgreSQL", POSTGRES)
    import asyncpg

    name = f"carecall_it_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("postgresql://", "postgres://")

    async def admin_exec(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin_exec(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        asyncio.run(admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pg_maker(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI a skipped integration test is a failed one: the service must be there."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and item.get_closest_marker("integration"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


@contextlib.asynccontextmanager
async def running_gateway(
    mosquitto: tuple[str, int],
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    *,
    instance: str,
) -> AsyncIterator[Any]:
    """A gateway on the real broker, database and Redis, with its own shared group;
    stopped (and awaited) on the way out."""
    from config.settings import load_settings
    from device_gateway.service import Gateway, MqttTarget
    from dispatcher.bus import RedisBus
    from dispatcher.clock import SystemClock

    host, port = mosquitto
    settings = load_settings(
        mqtt_url=f"mqtt://{host}:{port}",
        database_url=pg_url,
        redis_url=redis_url,
        instance=instance,
        mqtt_shared_group=f"grp-{instance}",
    )
    gw = Gateway(
        settings=settings,
        maker=pg_maker,
        bus=RedisBus(redis_url),
        clock=SystemClock(),
        mqtt=MqttTarget.from_url(settings.mqtt_url or ""),
        shared_group=settings.mqtt_shared_group,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await asyncio.wait_for(gw.connected.wait(), 10)
        yield gw
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)

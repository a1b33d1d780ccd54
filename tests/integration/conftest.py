"""Real services for integration tests: Mosquitto, PostgreSQL and Redis on 127.0.0.1.

In CI (CI=true) a missing service is a failure, never a skip. On a machine without them
the tests skip, naming what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.db import make_engine, make_sessionmaker
from tests.conftest import Databases

MOSQUITTO = ("127.0.0.1", 1883)
POSTGRES = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)


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
def leave_no_retained(mosquitto: tuple[str, int]) -> Iterator[set[str]]:
    """Device ids whose retained ``status`` and ``config`` the test leaves on the machine's
    Mosquitto (a device's online and will, the gateway's config answer): swept at teardown,
    also when the test failed (simulators/retained.py). Kept, they stay for good and every
    later gateway is replayed them; thousands made a will test miss its 15 s."""
    from simulators.retained import sweep

    ids: set[str] = set()
    yield ids
    if ids:
        report = sweep(*mosquitto, ids, timeout_s=30)
        print(f"\n{report.line()}")


@pytest.fixture
def redis_url() -> str:
    require("Redis", REDIS)
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
def pg_url(pg_databases: Databases) -> Iterator[str]:
    """A fresh PostgreSQL database per test, copied from the run's migrated template
    (tests/conftest.py's Databases), dropped afterwards."""
    require("PostgreSQL", POSTGRES)
    url = pg_databases.create(reuse=False)
    yield url
    pg_databases.drop(url)


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
    lane: str = "all",
) -> AsyncIterator[Any]:
    """A gateway on the real broker, database and Redis, with its own shared group (for a
    lane: that group's lane group, device_gateway/lanes.py); stopped (and awaited) on the
    way out."""
    from carecall.core.bus import RedisBus
    from carecall.core.clock import SystemClock
    from config.settings import load_settings
    from device_gateway.lanes import Lane
    from device_gateway.mqtt import MqttTarget
    from device_gateway.service import Gateway
    from dispatcher.registry.service import resident_vitals

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
        residents=resident_vitals,
        lane=Lane(lane),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await asyncio.wait_for(gw.connected.wait(), 10)
        yield gw
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)

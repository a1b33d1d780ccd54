"""Shared fixtures: a migrated SQLite database and a small registry to test against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.migrate import upgrade
from dispatcher.models import Device, Home, Resident, Station

NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/carecall.db"
    upgrade(url)
    return url


@pytest.fixture
async def maker(sqlite_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(sqlite_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def add_small_registry(
    maker: async_sessionmaker[AsyncSession],
    devices: dict[str, str],
    *,
    secret_hashes: dict[str, str] | None = None,
    heartbeat_s: int = 60,
) -> None:
    """One county → street → community chain, one home with one resident, and devices."""
    async with maker() as s, s.begin():
        s.add_all(
            [
                Station(
                    id="county", name="县中心", tier="county", kind="county_centre", lat=32.68, lon=112.84
                ),
                Station(
                    id="st1",
                    name="街道中心",
                    tier="street",
                    kind="street_centre",
                    parent_id="county",
                    lat=32.69,
                    lon=112.85,
                ),
                Station(
                    id="cm1",
                    name="社区站",
                    tier="community",
                    kind="day_care_centre",
                    parent_id="st1",
                    lat=32.691,
                    lon=112.851,
                ),
            ]
        )
        await s.flush()
        s.add(Home(id="h1", station_id="cm1", address="建设路1号", lat=32.692, lon=112.852))
        await s.flush()
        s.add(
            Resident(
                id="r1",
                home_id="h1",
                name="王秀英",
                sex="F",
                birth_date=date(1940, 3, 1),
                capacity_level=3,
                living_alone=True,
                conditions=["高血压"],
            )
        )
        for dev_id, kind in devices.items():
            s.add(
                Device(
                    id=dev_id,
                    home_id="h1",
                    kind=kind,
                    heartbeat_s=heartbeat_s,
                    enabled=True,
                    secret_hash=(secret_hashes or {}).get(dev_id),
                    created_at=NOW,
                )
            )

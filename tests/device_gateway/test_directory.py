"""The gateway's device cache (device_gateway/directory.py) on the test database (--db)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.registry.service import resident_vitals
from tests.conftest import NOW, add_small_registry


async def test_a_full_refresh_never_undoes_a_newer_reload(maker: async_sessionmaker[AsyncSession]) -> None:
    """The minute's refresh reads a snapshot; a device reloaded while it read keeps the
    newer facts (a disabled device must not be switched back on by a stale snapshot)."""
    from device_gateway import directory as directory_mod
    from device_gateway.directory import DeviceDirectory
    from device_gateway.models import Device

    await add_small_registry(maker, {"hub": "hub"})
    directory = DeviceDirectory(maker, resident_vitals)
    await directory.refresh()
    async with maker() as s:
        stale = await directory_mod.load_devices(s, residents=resident_vitals)  # hub enabled
    reading = asyncio.Event()
    release = asyncio.Event()
    real = directory_mod.load_devices

    async def slow_full_load(session: AsyncSession, device_ids: Any = None, *, residents: Any) -> Any:
        if device_ids is not None:
            return await real(session, device_ids, residents=residents)
        reading.set()
        await release.wait()
        return stale

    directory_mod.load_devices = slow_full_load  # type: ignore[assignment]
    try:
        refresh = asyncio.create_task(directory.refresh())
        await reading.wait()
        async with maker() as s, s.begin():
            hub = await s.get(Device, "hub")
            assert hub is not None
            hub.enabled = False
        assert await directory.reload(["hub"]) == ["hub"]
        release.set()
        await refresh
    finally:
        directory_mod.load_devices = real  # type: ignore[assignment]
    info = directory.cached("hub")
    assert info is not None and not info.enabled


async def test_a_device_is_watched_with_its_most_dependent_residents_ranges(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    """The registry's lookup (handed to the gateway) gives each device the facts of the
    most dependent resident of its home; a home without residents gives none."""
    from datetime import date

    from device_gateway.directory import DeviceDirectory
    from device_gateway.models import Device
    from dispatcher.registry.models import Home, Resident

    await add_small_registry(maker, {"hub": "hub"})  # h1 with r1, capacity level 3
    async with maker() as s, s.begin():
        s.add(Home(id="h2", station_id="cm1", address="建设路2号", lat=32.69, lon=112.85))
        await s.flush()
        s.add(Device(id="lone", home_id="h2", kind="hub", heartbeat_s=60, enabled=True, created_at=NOW))
        s.add(
            Resident(
                id="r2",
                home_id="h1",
                name="李桂兰",
                sex="F",
                birth_date=date(1936, 5, 2),
                capacity_level=4,
                hr_min=45,
                hr_max=110,
                rr_min=None,
                rr_max=25,
            )
        )
    directory = DeviceDirectory(maker, resident_vitals)
    await directory.refresh()
    hub, lone = directory.cached("hub"), directory.cached("lone")
    assert hub is not None and lone is not None
    assert (hub.capacity_level, hub.hr_min, hub.hr_max, hub.rr_min, hub.rr_max) == (4, 45, 110, None, 25)
    assert (lone.capacity_level, lone.hr_min, lone.hr_max, lone.rr_min, lone.rr_max) == (None,) * 5
    assert await directory.get("nobody") is None

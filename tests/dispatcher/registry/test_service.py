from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from device_gateway.credentials import verify_secret
from dispatcher.registry.importing import import_file
from dispatcher.registry.service import (
    get_device,
    issue_device,
    registry_counts,
    set_device_enabled,
)

from .support import NOW, Maker


async def one_home(maker: Maker, tmp_path: Path) -> None:
    stations = tmp_path / "stations.csv"
    stations.write_text(
        "id,name,kind,parent_id,lat,lon\n"
        "c,县中心,county_centre,,32.68,112.84\n"
        "s,街道中心,street_centre,c,32.69,112.85\n"
        "m,社区站,day_care_centre,s,32.691,112.851\n",
        encoding="utf-8",
    )
    homes = tmp_path / "homes.csv"
    homes.write_text("id,station_id,address,lat,lon\nh1,m,建设路1号,32.692,112.852\n", encoding="utf-8")
    await import_file(maker, stations)
    await import_file(maker, homes)


async def test_issue_then_rekey(empty_db: Maker, tmp_path: Path) -> None:
    await one_home(empty_db, tmp_path)
    async with empty_db() as session, session.begin():
        first = await issue_device(session, device_id="h1-hub", home_id="h1", kind="hub", model="X", now=NOW)
    async with empty_db() as session:
        device = await get_device(session, device_id="h1-hub")
    assert device is not None
    assert verify_secret(first, device.secret_hash)
    assert (device.kind, device.model, device.heartbeat_s, device.enabled) == ("hub", "X", 60, True)
    assert device.created_at == NOW == device.rekeyed_at

    later = NOW + timedelta(days=1)
    async with empty_db() as session, session.begin():
        second = await issue_device(session, device_id="h1-hub", home_id="h1", now=later)
    async with empty_db() as session:
        device = await get_device(session, device_id="h1-hub")
    assert device is not None
    assert second != first
    assert verify_secret(second, device.secret_hash)
    assert not verify_secret(first, device.secret_hash)
    assert device.created_at == NOW and device.rekeyed_at == later
    assert device.model == "X"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device_id": "bad id", "home_id": "h1", "kind": "hub"}, "invalid device id 'bad id'"),
        (
            {"device_id": "h1-x", "home_id": "h1", "kind": "toaster"},
            "unknown device kind 'toaster'",
        ),
        ({"device_id": "h1-x", "home_id": "h404", "kind": "hub"}, "unknown home 'h404'"),
        ({"device_id": "h1-x", "home_id": "h1"}, "kind is required"),
    ],
)
async def test_issue_errors(empty_db: Maker, tmp_path: Path, kwargs: dict[str, str], message: str) -> None:
    await one_home(empty_db, tmp_path)
    async with empty_db() as session:
        with pytest.raises(ValueError, match=message):
            await issue_device(session, now=NOW, **kwargs)
        with pytest.raises(ValueError, match="timezone-aware"):
            await issue_device(
                session, device_id="h1-hub", home_id="h1", kind="hub", now=datetime(2026, 1, 1)
            )


async def test_rekey_refuses_other_home_or_kind(empty_db: Maker, tmp_path: Path) -> None:
    await one_home(empty_db, tmp_path)
    async with empty_db() as session, session.begin():
        await issue_device(session, device_id="h1-hub", home_id="h1", kind="hub", now=NOW)
        with pytest.raises(ValueError, match="is a hub, not a radar"):
            await issue_device(session, device_id="h1-hub", home_id="h1", kind="radar", now=NOW)


async def test_enable_and_counts(empty_db: Maker, tmp_path: Path) -> None:
    await one_home(empty_db, tmp_path)
    async with empty_db() as session, session.begin():
        await issue_device(session, device_id="h1-hub", home_id="h1", kind="hub", now=NOW)
        await set_device_enabled(session, device_id="h1-hub", enabled=False)
        with pytest.raises(ValueError, match="unknown device 'nope'"):
            await set_device_enabled(session, device_id="nope", enabled=True)
    async with empty_db() as session:
        device = await get_device(session, device_id="h1-hub")
        assert device is not None and device.enabled is False
        assert await get_device(session, device_id="nope") is None
        counts = await registry_counts(session)
    assert counts == {
        "stations": 3,
        "staff": 0,
        "homes": 1,
        "residents": 0,
        "contacts": 0,
        "devices": 1,
        "devices_enabled": 0,
        "devices_keyed": 1,
    }

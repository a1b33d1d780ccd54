"""County scale: the fleet registry, and a mixed run through the real gateway on the
embedded broker and the test database (--db)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.clock import Clock
from carecall.shell.fleet_registry import LOADGEN_ID, ensure_fleet
from device_gateway.models import Device, DeviceEvent
from simulators.fleet import run_fleet
from simulators.scenario import Scenario
from tests.carecall.shell.conftest import PLATFORM

# ---------------------------------------------------------------------- registry


async def test_ensure_fleet_reuses_an_existing_fleet_and_keys_only_connected_devices(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    path = tmp_path / "fleet-secrets.json"
    first = await ensure_fleet(maker, 1500, prefix="t", connected=3, secrets_path=path)
    assert (first.setup.created, first.setup.reused, first.setup.keyed) == (1500, 0, 3)
    assert first.setup.loadgen_rekeyed and first.loadgen_id == f"t-{LOADGEN_ID}"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [s.secret != "" for s in first.specs[:4]] == [True, True, True, False]
    assert len({s.kind for s in first.specs}) >= 5, "a county's mix of kinds"

    again = await ensure_fleet(maker, 2000, prefix="t", connected=3, secrets_path=path)
    assert (again.setup.created, again.setup.reused, again.setup.keyed) == (500, 1500, 0)
    assert not again.setup.loadgen_rekeyed and again.loadgen_secret == first.loadgen_secret
    assert [s.secret for s in again.specs[:3]] == [s.secret for s in first.specs[:3]]
    async with maker() as s:
        devices = await s.scalar(select(func.count()).select_from(Device))
        privileged = list(await s.scalars(select(Device.id).where(Device.privileged.is_(True))))
    assert devices == 2001 and privileged == [f"t-{LOADGEN_ID}"]

    # Without the secrets file the devices that need a connection are re-keyed.
    path.unlink()
    third = await ensure_fleet(maker, 2000, prefix="t", connected=5, secrets_path=path)
    assert third.setup.created == 0 and third.setup.keyed == 5 and third.setup.loadgen_rekeyed
    assert json.loads(path.read_text())["prefix"] == "t"


STORM = Scenario.model_validate(
    {
        "name": "small_storm",
        "day_night_rhythm": False,
        "burst": {"start_s": 1, "duration_s": 2, "total": 300, "types": {"sos": 1, "fall": 1}},
        "power_cut": {"at_s": 1, "duration_s": 2, "devices": 100},
        "resend": {"initial_s": 2, "factor": 2, "max_s": 8},
    }
)


@pytest.mark.slow
async def test_mixed_fleet_run_stores_load_mode_events_for_registered_devices(
    platform: dict[str, Any], tmp_path: Path
) -> None:
    maker = platform["maker"]
    prepared = await ensure_fleet(maker, 2000, prefix="mx", connected=20, secrets_path=tmp_path / "s.json")
    seen: list[Any] = []
    report = await run_fleet(
        host="127.0.0.1",
        port=platform["port"],
        specs=prepared.specs,
        scenario=STORM,
        clock=Clock(speed=1.0),
        duration_s=5,
        loadgen_username=prepared.loadgen_id,
        loadgen_password=prepared.loadgen_secret,
        observer_username=PLATFORM[0],
        observer_password=PLATFORM[1],
        max_connections=20,
        on_stats=seen.append,
        stats_interval_s=0.5,
        drain_s=10,
    )
    assert report.mode == "mixed" and report.modes == ["connections", "load"]
    assert (report.connected_devices, report.load_mode_devices) == (20, 1980)
    assert report.connections_held == 20 and report.stopped_by == "duration"
    assert report.open_files.soft_after >= report.open_files.soft_before
    load = report.load
    assert load is not None and load.acks_observed is True
    # the storm is shared: 300 events in all, the power cut 100 devices in all
    assert report.events_sent >= 300
    # each power-cut device: online first (as when it connected), offline, online again
    assert load.offline_max >= 95 and load.status_sent == 3 * load.status_cleared
    assert load.status_cleared >= load.offline_max
    assert load.events_pending == 0 and load.events_acked == load.events_sent
    assert report.ack_latency["load"].count == load.events_acked
    assert seen and seen[-1].events_acked == report.events_acked
    load_ids = {s.device_id for s in prepared.specs[20:]}
    async with maker() as s:
        rows = (
            await s.execute(select(DeviceEvent.device_id, DeviceEvent.event_id, DeviceEvent.source))
        ).all()
    stored_load = {(d, e) for d, e, src in rows if d in load_ids and src == "device"}
    assert len(stored_load) == load.events_sent, "every load-mode event stored once, under its device"
    conn = report.connections
    assert conn is not None and conn.events_received == conn.events_raised

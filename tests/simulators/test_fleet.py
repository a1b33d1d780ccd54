"""County scale: the fleet registry, the split between connections and load mode, and a
mixed run through the real gateway on the embedded broker and SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import load_settings
from device_gateway.broker import EmbeddedBroker
from device_gateway.service import Gateway, MqttTarget
from dispatcher.bus import MemoryBus
from dispatcher.clock import Clock, SystemClock
from dispatcher.models import Device, DeviceEvent
from simulators.device import DeviceSpec
from simulators.fleet import (
    FD_RESERVE,
    LOADGEN_ID,
    ensure_fleet,
    plan_load,
    plan_modes,
    run_fleet,
    split_scenario,
)
from simulators.live import LiveSummary, plain_line
from simulators.scenario import Scenario, load_scenario

PLATFORM = ("platform", "pw-platform-123456")


def specs(
    n: int, kinds: tuple[str, ...] = ("hub", "button", "mattress", "radar", "watch")
) -> list[DeviceSpec]:
    return [DeviceSpec(f"d{i:05d}", kinds[i % len(kinds)], f"h{i:05d}", "", 60) for i in range(n)]


# ---------------------------------------------------------------------- plans (pure)


def test_shipped_power_cut_takes_2000_devices_offline_at_once_and_brings_them_back() -> None:
    scen = load_scenario("power_cut")
    assert scen.power_cut is not None and scen.power_cut.devices == 2000
    acts = plan_load(scen, specs(10_000), scen.duration_s or 0)
    drops = Counter(a.at_s for a in acts if a.what == "drop")
    backs = Counter(a.at_s for a in acts if a.what == "back")
    cut = scen.power_cut
    assert drops[cut.at_s] == 2000, "all 2,000 at the same moment"
    assert backs[cut.at_s + cut.duration_s] == 2000
    dropped = {a.device for a in acts if a.what == "drop"}
    assert dropped == {a.device for a in acts if a.what == "back"}


def test_shipped_alarm_storm_is_5000_events_in_10_seconds() -> None:
    scen = load_scenario("alarm_storm")
    county = specs(20_000)
    acts = [a for a in plan_load(scen, county, scen.duration_s or 0) if a.what == "event"]
    assert len(acts) == 5000
    assert scen.burst is not None
    lo, hi = scen.burst.start_s, scen.burst.start_s + scen.burst.duration_s
    assert hi - lo == 10 and all(lo <= a.at_s <= hi for a in acts)
    # senders are plausible: smoke alarms from smoke detectors or hubs, never from a watch
    kinds = {county[a.device].kind for a in acts if a.type == "smoke"}
    assert kinds <= {"smoke", "hub"}


def test_flapping_and_resend_forever_play_in_load_mode_when_no_device_has_a_connection() -> None:
    flap = load_scenario("flapping")
    acts = plan_load(flap, specs(50), flap.duration_s or 0)
    drops = [a for a in acts if a.what == "drop"]
    assert len(drops) == 20 and len({a.device for a in drops}) == 1
    assert specs(50)[drops[0].device].kind == "hub"
    forever = load_scenario("resend_forever")
    acts = plan_load(forever, specs(50), forever.duration_s or 0)
    (item,) = [a for a in acts if a.what == "forever"]
    assert item.max_sends == 200 and item.interval_s == 30


def test_split_shares_counted_stories_and_gives_single_devices_to_connections() -> None:
    storm = load_scenario("alarm_storm")
    conn, load = split_scenario(storm, 1000, 99_000)
    assert conn.burst is not None and load.burst is not None
    assert conn.burst.total + load.burst.total == 5000 and conn.burst.total == 50
    conn, load = split_scenario(storm, 52, 0)  # a small county: the whole storm, whatever its size
    assert conn.burst is not None and conn.burst.total == 5000
    cut = load_scenario("power_cut")
    conn, load = split_scenario(cut, 500, 99_500)
    assert conn.power_cut is not None and load.power_cut is not None
    assert conn.power_cut.devices + load.power_cut.devices == 2000
    forever = load_scenario("resend_forever")
    conn, load = split_scenario(forever, 10, 1000)
    assert len(conn.resend_forever) == 1 and not load.resend_forever
    conn, load = split_scenario(forever, 0, 1000)
    assert len(load.resend_forever) == 1


def test_plan_modes_keeps_a_reserve_and_honours_the_cap() -> None:
    assert plan_modes(100_000, 20_000) == (20_000 - FD_RESERVE, 80_000 + FD_RESERVE)
    assert plan_modes(100_000, 20_000, max_connections=500) == (500, 99_500)
    assert plan_modes(10, 20_000) == (10, 0)
    assert plan_modes(10, 100) == (0, 10)


def test_plain_progress_line_names_every_live_figure() -> None:
    from simulators.fleet import FleetStats

    st = FleetStats(
        elapsed_s=3,
        planned_s=60,
        devices=100,
        connections_planned=10,
        connections_online=9,
        load_devices=90,
        messages=1234,
        max_messages=10_000,
        msgs_per_s=400,
        telemetry_sent=1000,
        events_sent=234,
        events_acked=230,
        acks_received=240,
        resends=4,
        offline_devices=2,
        conn_ack_p50_ms=3.2,
        conn_ack_p99_ms=20.5,
        load_ack_p50_ms=None,
        load_ack_p99_ms=None,
    )
    line = plain_line(st)
    for part in (
        "conn 9/10",
        "msgs 1234 (400/s)",
        "acked 230",
        "acks 240",
        "resends 4",
        "offline 2",
        "3.2/20.5",
    ):
        assert part in line


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


# ---------------------------------------------------------------------- through the gateway


@pytest.fixture
async def platform(maker: async_sessionmaker[AsyncSession], sqlite_url: str) -> AsyncIterator[dict[str, Any]]:
    """The embedded broker (which checks device secrets and lets privileged devices speak
    for others) and the real gateway on SQLite."""
    broker = EmbeddedBroker(
        host="127.0.0.1", port=0, maker=maker, platform_username=PLATFORM[0], platform_password=PLATFORM[1]
    )
    await broker.start()
    settings = load_settings(database_url=sqlite_url)
    gw = Gateway(
        settings=settings,
        maker=maker,
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=MqttTarget("127.0.0.1", broker.port, *PLATFORM, tls=False),
        shared_group=None,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    await asyncio.wait_for(gw.connected.wait(), 10)
    try:
        yield {"port": broker.port, "maker": maker, "url": sqlite_url, "gw": gw}
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await broker.stop()


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


@pytest.mark.slow
async def test_cli_simulate_devices_runs_both_modes_and_reports_json(
    platform: dict[str, Any], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CARECALL_DATABASE_URL": platform["url"],
        "CARECALL_LOG_LEVEL": "WARNING",
    }
    env.pop("CARECALL_MQTT_URL", None)
    url = f"mqtt://{PLATFORM[0]}:{PLATFORM[1]}@127.0.0.1:{platform['port']}"
    args = [
        *("-m", "dispatcher.cli", "simulate", "--devices", "600", "--max-connections", "6"),
        *("--scenario", "alarm_storm", "--duration", "4", "--speed", "1", "--mqtt-url", url),
        *("--fleet-prefix", "cli", "--fleet-secrets", str(tmp_path / "cli.json")),
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["mode"] == "mixed" and report["connections_held"] == 6
    assert report["load_mode_devices"] == 594 and report["scenario"] == "alarm_storm"
    assert report["setup"]["created"] == 600 and report["setup"]["keyed"] == 6
    assert report["open_files"]["soft_after"] >= report["open_files"]["soft_before"]
    # alarm_storm starts its 5,000 events 10 s in: a 4 s run stops before, by itself
    assert report["stopped_by"] == "duration" and report["messages"] > 0
    text = err.decode()
    assert "600 devices" in text and "load mode" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("t=")]
    assert len(lines) >= 2 and all("/6 load 594 |" in ln for ln in lines), "plain lines off a terminal"


async def test_cli_refuses_a_remote_broker_not_given_explicitly(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CARECALL_MQTT_URL": "mqtt://192.0.2.10:1883",
        "CARECALL_DATABASE_URL": "sqlite:///x.db",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "dispatcher.cli", "simulate", "--devices", "10", "--allow-remote"),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and b"loopback only" in err


def test_live_summary_plain_mode_writes_lines(tmp_path: Path) -> None:
    from simulators.fleet import FleetStats

    fields = dict.fromkeys(FleetStats.model_fields, 0)
    fields.update(conn_ack_p50_ms=None, conn_ack_p99_ms=None, load_ack_p50_ms=None, load_ack_p99_ms=None)
    out = tmp_path / "log.txt"
    with out.open("w") as fh, LiveSummary(fh, rich=False, plain_every_s=0) as live:
        live.say("hello")
        live.update(FleetStats(**fields))
    lines = out.read_text().splitlines()
    assert lines[0] == "hello" and lines[1].startswith("t=0/0s")

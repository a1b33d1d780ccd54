"""``carecall gateway`` and ``carecall dispatcher`` as separate processes on PostgreSQL,
Mosquitto and Redis, as a deployment runs them (issue 10, items 1 and 2):

- an SOS after a device went offline and came back (a restore) still opens a call and the
  device gets ``assigned``;
- after a broker restart device acks flow again (``received`` from the gateway *and*
  ``assigned`` from the dispatcher), and while the broker is down the dispatcher hands no
  ack to its MQTT library: they wait in the outbox table, so its memory stays flat.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.schema import import_all_models
from dispatcher.calls.models import Call
from dispatcher.notifications.models import Notification
from tests.integration.procs import (
    device,
    log_events,
    platform_env,
    private_broker,
    register_county,
    start,
    stop,
    tail,
    uniq,
    wait_log,
)

pytestmark = pytest.mark.integration

# the tables a Notification's foreign keys name, when this file runs alone
import_all_models()


async def wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if await check():  # type: ignore[operator]
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(0.1)


async def count_calls(
    maker: async_sessionmaker[AsyncSession], event_class: str, status: str | None = None
) -> int:
    async with maker() as s:
        stmt = select(func.count()).select_from(Call).where(Call.event_class == event_class)
        if status is not None:
            stmt = stmt.where(Call.status == status)
        return int(await s.scalar(stmt) or 0)


async def test_sos_after_offline_and_online_opens_a_call_and_is_assigned(
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    mosquitto: tuple[str, int],
    tmp_path: Path,
    leave_no_retained: set[str],
) -> None:
    prefix = uniq("rst")
    county = await register_county(pg_maker, prefix, homes=1)
    dev_id = county.devices[0]
    leave_no_retained.add(dev_id)  # its retained status, and the gateway's config answer
    env = platform_env(pg_url=pg_url, redis_url=redis_url, mqtt_port=mosquitto[1], group=f"grp-{prefix}")
    gw_log, dsp_log = tmp_path / "gateway.log", tmp_path / "dispatcher.log"
    gw = start("gateway", env, f"gw-{prefix}", gw_log)
    dsp = start("dispatcher", env, f"dsp-{prefix}", dsp_log)
    try:
        await wait_log(gw_log, "gateway.connected", 45)
        await wait_log(dsp_log, "dispatcher.mqtt_connected", 45)  # started, and its acks can go out
        async with device(mosquitto[1], dev_id, will=True) as dev:
            await dev.status("online")
            await asyncio.sleep(0.5)
            # the device drops: its will says offline; a trouble call opens
            await dev.status("offline")
            await wait_for(lambda: _has(pg_maker, "trouble"), 15, "the offline trouble call")
            # ... and comes back: the restore closes it
            await dev.status("online")
            await wait_for(lambda: _has(pg_maker, "trouble", "resolved"), 15, "the restore")
            # the next SOS must become a call, acked all the way to the device
            await dev.send("sos-after-restore")
            await dev.wait_ack("sos-after-restore", "received", 20)
            await dev.wait_ack("sos-after-restore", "assigned", 30)
        assert await count_calls(pg_maker, "emergency") == 1
        assert not [r for r in log_events(dsp_log) if r.get("event") == "dispatcher.db_unavailable"], tail(
            dsp_log
        )
        # each command froze its startup heap out of the collector (carecall/core/heap.py):
        # the gateway at start and once connected (its device directory read), the dispatcher at start
        settled = {
            name: [r for r in log_events(path) if r.get("event") == "process.heap_settled"]
            for name, path in (("gateway", gw_log), ("dispatcher", dsp_log))
        }
        assert [r["role"] for r in settled["gateway"]] == ["gateway-all", "gateway-all"], tail(gw_log)
        assert [r["role"] for r in settled["dispatcher"]] == ["dispatcher"], tail(dsp_log)
        assert all(int(str(r["frozen_objects"])) > 100_000 for rs in settled.values() for r in rs), settled
    finally:
        stop(dsp)
        stop(gw)


async def _has(maker: async_sessionmaker[AsyncSession], event_class: str, status: str | None = None) -> bool:
    return await count_calls(maker, event_class, status) >= 1


async def test_acks_flow_after_a_broker_restart_and_memory_stays_flat_while_it_is_down(
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    tmp_path: Path,
) -> None:
    prefix = uniq("brk")
    county = await register_county(pg_maker, prefix, homes=2)
    with private_broker(tmp_path) as broker:
        env = platform_env(pg_url=pg_url, redis_url=redis_url, mqtt_port=broker.port, group=f"grp-{prefix}")
        gw_log, dsp_log = tmp_path / "gateway.log", tmp_path / "dispatcher.log"
        gw = start("gateway", env, f"gw-{prefix}", gw_log)
        dsp = start("dispatcher", env, f"dsp-{prefix}", dsp_log)
        try:
            await wait_log(gw_log, "gateway.connected", 45)
            await wait_log(dsp_log, "dispatcher.mqtt_connected", 45)
            async with device(broker.port, county.devices[0]) as dev:
                await dev.send("sos-1")
                await dev.wait_ack("sos-1", "received", 20)
                await dev.wait_ack("sos-1", "assigned", 30)

            broker.stop()
            # While the broker is down the dispatcher has device acks to send: many, and
            # big (a long event id), so acks piling up in memory would show at once.
            async with pg_maker() as s:
                call_id = await s.scalar(select(func.min(Call.id)))
            assert call_id is not None
            now = datetime.now(UTC)
            async with pg_maker() as s, s.begin():
                s.add_all(
                    Notification(
                        call_id=call_id,
                        channel="mqtt",
                        purpose="device_ack",
                        target=f"device:{county.devices[1]}",
                        body={"event_id": f"pad-{i}-" + "x" * 8000, "state": "assigned"},
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    for i in range(2000)
                )
            proc = psutil.Process(dsp.pid)
            await asyncio.sleep(1.5)  # the dispatcher notices the loss, the outbox runs
            rss0 = proc.memory_info().rss
            samples = []
            for _ in range(10):
                await asyncio.sleep(0.5)
                samples.append(proc.memory_info().rss)
            grown_mb = (max(samples) - rss0) / 1e6
            print(f"\ndispatcher RSS {rss0 / 1e6:.1f} MB, grew {grown_mb:.1f} MB in 5 s with the broker down")
            assert grown_mb < 20, f"dispatcher memory grew {grown_mb:.1f} MB in 5 s while the broker was down"
            async with pg_maker() as s:
                pending = await s.scalar(
                    select(func.count())
                    .select_from(Notification)
                    .where(Notification.channel == "mqtt", Notification.status == "pending")
                )
            assert pending is not None and pending >= 2000, "the acks wait in the outbox table"

            broker.start()  # same port
            t0 = time.monotonic()
            async with device(broker.port, county.devices[0]) as dev:
                await dev.send_until_received("sos-2", "fall", 30)
                at = await dev.wait_ack("sos-2", "assigned", 30)
            print(f"after the restart: 'assigned' {at - t0:.1f} s after the broker was back")
            await wait_log(dsp_log, "dispatcher.mqtt_connected", 5, count=2)
            assert not [r for r in log_events(dsp_log) if r.get("event") == "dispatcher.handling_failed"]
        finally:
            stop(dsp)
            stop(gw)

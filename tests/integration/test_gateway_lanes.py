"""The alarm lane apart from the readings (issue 15) on the real Mosquitto, PostgreSQL and
Redis: an ``events`` gateway and a ``readings`` gateway (``carecall gateway --lane
readings``, a process of its own) run while a reading flood goes on. Every SOS is acked
``received`` and stored, the readings are stored, and the events process is never handed
a reading (it counts every message it receives, per channel)."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.models import DeviceEvent, DeviceState
from tests.conftest import add_small_registry
from tests.integration.conftest import running_gateway
from tests.integration.procs import device, log_events, stop, tail, wait_log

pytestmark = pytest.mark.integration

READERS = 100  # devices sending readings
FLOOD_RATE = 2_500  # readings a second, all devices together
FLOOD_S = 6.0
SOS_COUNT = 20
SOS_EVERY_S = 0.25

# The flood in a process of its own, so its paho thread does not take the test's (the
# events gateway's) interpreter lock.
FLOOD = """
import json, sys, time
import paho.mqtt.client as paho
host, port, prefix, n, rate, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=prefix + "-flood")
c.max_queued_messages_set(0)
c.connect(host, port)
c.loop_start()
t0 = time.monotonic()
i = 0
while time.monotonic() - t0 < secs:
    dev = f"{prefix}-{i % n:03d}"
    body = {"ts": int(time.time() * 1000), "metrics": {"hr": 60 + i % 20, "rr": 15, "presence": "in_bed", "seq": i}}
    c.publish(f"carecall/v1/devices/{dev}/telemetry", json.dumps(body), qos=0)
    i += 1
    delay = t0 + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(i, flush=True)
c.disconnect()
c.loop_stop()
"""


def start_readings_lane(
    pg_url: str, redis_url: str, instance: str, group: str, host: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        CARECALL_MQTT_URL=f"mqtt://{host}:{port}",
        CARECALL_DATABASE_URL=pg_url,
        CARECALL_REDIS_URL=redis_url,
        CARECALL_MQTT_SHARED_GROUP=group,
        CARECALL_LOG_FORMAT="json",
        CARECALL_STATE_FLUSH_INTERVAL_S="0.5",
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "carecall.shell.cli",
                "gateway",
                "--instance",
                instance,
                "--lane",
                "readings",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_an_sos_is_acked_on_the_events_lane_while_the_readings_lane_takes_a_flood(
    mosquitto: tuple[str, int],
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    tmp_path: Path,
) -> None:
    host, port = mosquitto
    run = uuid.uuid4().hex[:6]
    readers = [f"ln{run}-{i:03d}" for i in range(READERS)]
    button = f"ln{run}-sos"
    await add_small_registry(pg_maker, {**dict.fromkeys(readers, "mattress"), button: "button"})
    log = tmp_path / "readings.log"
    readings = start_readings_lane(pg_url, redis_url, f"rd-{run}", f"grp-rd-{run}", host, port, log)
    try:
        await wait_log(log, "gateway.connected", 30)
        connected = next(r for r in log_events(log) if r.get("event") == "gateway.connected")
        assert connected.get("lane") == "readings" and connected.get("connection") == "telemetry"
        async with (
            running_gateway(
                mosquitto, pg_url, pg_maker, redis_url, instance=f"ev-{run}", lane="events"
            ) as ev,
            device(port, button) as sos,
        ):
            flood = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                FLOOD,
                host,
                str(port),
                f"ln{run}",
                str(READERS),
                str(FLOOD_RATE),
                str(FLOOD_S),
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                await asyncio.sleep(1.0)  # the flood is going
                sent: dict[str, float] = {}
                for i in range(SOS_COUNT):
                    sent[f"s{i}"] = await sos.send(f"s{i}")
                    await asyncio.sleep(SOS_EVERY_S)
                out, _ = await asyncio.wait_for(flood.communicate(), FLOOD_S + 30)
            finally:
                if flood.returncode is None:
                    flood.kill()
                    await flood.wait()
            flooded = int(out.decode().split()[-1])
            ms = sorted([(await sos.wait_ack(e, "received", 10.0) - t) * 1000 for e, t in sent.items()])
            events_channels = dict(ev.stats.channels)
            off_lane = ev.stats.off_lane
    finally:
        stop(readings)
    assert flooded >= FLOOD_RATE * FLOOD_S * 0.8, "the flood ran"
    # the alarm lane: every SOS stored and acked, and not one reading handed to it
    async with pg_maker() as s:
        stored = await s.scalar(
            select(func.count()).select_from(DeviceEvent).where(DeviceEvent.device_id == button)
        )
        fresh = await s.scalar(
            select(func.count())
            .select_from(DeviceState)
            .where(DeviceState.device_id.in_(readers), DeviceState.metrics.is_not(None))
        )
    assert stored == SOS_COUNT
    assert events_channels.get("telemetry", 0) == 0 and off_lane == 0, events_channels
    assert events_channels.get("events") == SOS_COUNT
    assert statistics.median(ms) < 500 and ms[-1] < 3000, ms
    # the readings lane: every device's readings stored, nothing failed
    assert fresh == READERS, tail(log)
    assert not [r for r in log_events(log) if r.get("event") == "gateway.message_failed"], tail(log)
    print(
        f"SOS ack during a {flooded}-reading flood: p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms"
    )

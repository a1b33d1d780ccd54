"""The gateway against the real Mosquitto, PostgreSQL and Redis.

These are the Foundation issue's "done when" points: an SOS sent three times is stored
once and acked fast while a thousand malformed messages flow around it; a gateway killed
with SIGKILL loses nothing and duplicates nothing; two copies share the load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import RedisBus
from carecall.core.clock import SystemClock
from config.settings import load_settings
from device_gateway.models import DeviceEvent, RejectedMessage
from device_gateway.mqtt import MqttTarget
from device_gateway.service import Gateway
from dispatcher.registry.service import resident_vitals
from tests.conftest import add_small_registry
from tests.integration.procs import wait_log

pytestmark = pytest.mark.integration

ROOT = "carecall/v1/devices"


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def forget_session(host: str, port: int, client_id: str) -> None:
    """Drop a persistent session we created, so the shared broker keeps no queue for it."""
    with contextlib.suppress(aiomqtt.MqttError):
        async with aiomqtt.Client(host, port, identifier=client_id, clean_session=True):
            pass


@contextlib.asynccontextmanager
async def device_client(host: str, port: int, device_id: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(host, port, identifier=device_id, clean_session=True) as c:
        await c.subscribe(f"{ROOT}/{device_id}/ack", qos=1)
        yield c


def malformed_messages(known: str, n: int) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected reason) covering every kind of bad input in docs/protocol.md."""
    ev = f"{ROOT}/{known}/events"
    kinds: list[tuple[str, bytes, str]] = [
        (ev, b"not json at all", "not_json"),
        (ev, b"\xff\xfe\x00garbage", "not_utf8"),
        (ev, b'{"id":"x","ts":1,"type":"sos","pad":"' + b"a" * 17_000 + b'"}', "too_large"),
        (ev, b"[" * 5000 + b"]" * 5000, "too_deep"),
        (ev, b'{"id":"x","ts":' + b"9" * 5000 + b',"type":"sos"}', "bad_value"),
        (ev, b'{"ts":1764120600123,"type":"sos"}', "missing_field"),
        (ev, b'{"id":"x1","ts":"yesterday","type":"sos"}', "bad_value"),
        (ev, b'{"id":"x2","ts":true,"type":"sos"}', "wrong_type"),
        (ev, b'{"id":5,"ts":1764120600123,"type":"sos"}', "wrong_type"),
        (ev, b"[1,2,3]", "not_object"),
        (f"{ROOT}/{known}/telemetry", b'{"metrics":{"hr":{"nested":1}}}', "wrong_type"),
        (f"{ROOT}/{known}/status", b'{"state":"sleepy"}', "bad_value"),
        (f"{ROOT}/{known}/bogus", b"{}", "bad_topic"),
        (f"{ROOT}/{known}/events/extra", b"{}", "bad_topic"),
        (
            f"{ROOT}/nobody-{uuid.uuid4().hex[:6]}/events",
            b'{"id":"a","ts":1764120600123,"type":"sos"}',
            "unknown_device",
        ),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


async def _first_received_ack(
    client: aiomqtt.Client, event_id: str, received: list[dict[str, object]], *, copies: int
) -> float | None:
    """Read acks until ``copies`` acks of ``event_id``; when the first ``received`` came."""
    ack_at: float | None = None
    async for m in client.messages:
        body = json.loads(m.payload)  # type: ignore[arg-type]
        received.append(body)
        if body.get("event_id") == event_id and body.get("state") == "received" and ack_at is None:
            ack_at = time.monotonic()
        if sum(1 for b in received if b.get("event_id") == event_id) >= copies:
            break
    return ack_at


@pytest.mark.parametrize("telemetry_qos", [0, 1])
async def test_sos_three_times_stored_once_acked_fast_amid_1000_malformed(
    telemetry_qos: int,
    mosquitto: tuple[str, int],
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
) -> None:
    host, port = mosquitto
    dev = uniq("btn")
    await add_small_registry(pg_maker, {dev: "button"})
    instance = uniq("it")
    settings = load_settings(
        mqtt_url=f"mqtt://{host}:{port}",
        database_url=pg_url,
        redis_url=redis_url,
        instance=instance,
        mqtt_shared_group=uniq("grp"),
    )
    bus = RedisBus(redis_url)
    gw = Gateway(
        settings=settings,
        maker=pg_maker,
        bus=bus,
        clock=SystemClock(),
        mqtt=MqttTarget.from_url(settings.mqtt_url or ""),
        shared_group=settings.mqtt_shared_group,
        residents=resident_vitals,
        telemetry_qos=telemetry_qos,
    )
    hints: list[dict[str, object]] = []

    async def listen() -> None:
        async for msg in bus.subscribe("events"):
            hints.append(msg)

    listener = asyncio.create_task(listen())
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await asyncio.wait_for(gw.connected.wait(), 10)
        await asyncio.sleep(0.3)  # let the Redis subscription settle
        bad = malformed_messages(dev, 1000)
        sos = json.dumps(
            {"id": "sos-1", "ts": int(time.time() * 1000), "type": "sos", "sensor": "bedside-button"}
        ).encode()
        async with (
            device_client(host, port, dev) as c,
            aiomqtt.Client(host, port, identifier=uniq("noise")) as noise,
        ):
            t0 = 0.0
            received: list[dict[str, object]] = []
            reader = asyncio.create_task(_first_received_ack(c, "sos-1", received, copies=3))
            for i, (topic, payload, _) in enumerate(bad):
                await noise.publish(topic, payload, qos=1)
                if i in (0, 400, 800):  # the SOS, resent as a device does, amid the noise
                    if i == 0:
                        t0 = time.monotonic()
                    await c.publish(f"{ROOT}/{dev}/events", sos, qos=1)
            ack_at = await asyncio.wait_for(reader, 10)
        assert ack_at is not None
        first_ack_ms = (ack_at - t0) * 1000
        print(
            f"\nfirst 'received' ack seen by the device {first_ack_ms:.1f} ms after it published (amid 1000 malformed)"
        )
        # Before the fix the junk queued ahead of the SOS (1.1 s); 500 ms keeps that meaning
        # on a busy shared machine (121 ms seen with other suites running beside it).
        assert first_ack_ms < 500

        # Every bad input is counted, in both modes: with telemetry at QoS 0 an unknown
        # channel arrives on the readings' connection and is counted there.
        counted = bad

        # Only this test's devices: the shared broker also replays the retained status of
        # every device other tests left behind, each an unknown_device rejection here, and
        # other runs of this test on the same broker send their own "nobody-…" messages.
        nobody = next(t.split("/")[3] for t, _, r in bad if r == "unknown_device")

        def ours() -> Counter[str]:
            out: Counter[str] = Counter()
            for (device_id, reason), n in gw.rejects.by_device_reason.items():
                if device_id is None or device_id in (dev, nobody):
                    out[reason] += n
            return out

        deadline = time.monotonic() + 15
        while sum(ours().values()) < len(counted) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        expected = Counter(reason for _, _, reason in counted)
        print("rejected by reason:", dict(sorted(ours().items())))
        assert ours() == expected
        assert not task.done(), "gateway must keep running"

        await gw._flush()  # rejections are kept for inspection
        async with pg_maker() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(DeviceEvent)
                .where(DeviceEvent.device_id == dev, DeviceEvent.event_id == "sos-1")
            )
            kept = dict(
                (
                    await s.execute(
                        select(RejectedMessage.reason, func.sum(RejectedMessage.messages))
                        .where(
                            or_(
                                RejectedMessage.device_id.is_(None),
                                RejectedMessage.device_id == dev,
                                RejectedMessage.device_id == nobody,
                            )
                        )
                        .group_by(RejectedMessage.reason)
                    )
                ).all()
            )
            row = (await s.scalars(select(DeviceEvent).where(DeviceEvent.device_id == dev))).one()
        assert n == 1, "sent three times, stored once"
        assert kept == dict(expected)
        assert row.event_class == "emergency" and row.sensor == "bedside-button" and not row.clock_suspect
        assert gw.stats.events_stored == 1 and gw.stats.events_duplicate == 2
        assert any(h.get("count") == 1 for h in hints), "dispatcher hint published on Redis"

        # and the next good message still flows
        async with device_client(host, port, dev) as c:
            ok = json.dumps({"id": "sos-2", "ts": int(time.time() * 1000), "type": "fall"}).encode()
            await c.publish(f"{ROOT}/{dev}/events", ok, qos=1)
            async for m in c.messages:
                if json.loads(m.payload)["event_id"] == "sos-2":  # type: ignore[arg-type]
                    break
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        listener.cancel()
        await bus.close()
        await forget_session(host, port, f"carecall-gateway-{instance}")


# --------------------------------------------------------------------------- processes


def start_gateway(
    pg_url: str, redis_url: str, instance: str, group: str, host: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        CARECALL_MQTT_URL=f"mqtt://{host}:{port}",
        CARECALL_DATABASE_URL=pg_url,
        CARECALL_REDIS_URL=redis_url,
        CARECALL_MQTT_SHARED_GROUP=group,
        CARECALL_LOG_FORMAT="json",
    )
    fh = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "carecall.shell.cli", "gateway", "--instance", instance],
        env=env,
        stdout=fh,
        stderr=subprocess.STDOUT,
    )


class ResendingDevice:
    """A device that resends each event every 0.5 s until acked ``received``."""

    def __init__(self, host: str, port: int, device_id: str) -> None:
        self.host, self.port, self.id = host, port, device_id
        self.pending: dict[str, bytes] = {}
        self.acked: set[str] = set()
        self.sends = 0

    async def run(self, ids: list[str], rate_per_s: float, done: asyncio.Event) -> None:
        async with device_client(self.host, self.port, self.id) as c:
            reader = asyncio.create_task(self._read(c))
            try:
                for ev_id in ids:
                    body = json.dumps({"id": ev_id, "ts": int(time.time() * 1000), "type": "sos"}).encode()
                    self.pending[ev_id] = body
                    await c.publish(f"{ROOT}/{self.id}/events", body, qos=1)
                    self.sends += 1
                    await asyncio.sleep(1 / rate_per_s)
                while self.pending and not done.is_set():
                    await asyncio.sleep(0.5)
                    for body in list(self.pending.values()):
                        await c.publish(f"{ROOT}/{self.id}/events", body, qos=1)
                        self.sends += 1
            finally:
                reader.cancel()

    async def _read(self, c: aiomqtt.Client) -> None:
        async for m in c.messages:
            body = json.loads(m.payload)  # type: ignore[arg-type]
            if body.get("state") == "received":
                self.acked.add(body["event_id"])
                self.pending.pop(body["event_id"], None)


async def wait_all_acked(devs: list[ResendingDevice], total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(d.acked) for d in devs) < total:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {sum(len(d.acked) for d in devs)}/{total} acked")
        await asyncio.sleep(0.1)


async def test_sigkilled_gateway_loses_nothing_and_duplicates_nothing(
    mosquitto: tuple[str, int],
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    tmp_path: Path,
) -> None:
    host, port = mosquitto
    ids = {uniq("dev"): "hub" for _ in range(3)}
    await add_small_registry(pg_maker, ids)
    instance, group = uniq("kill"), uniq("grp")
    log = tmp_path / "gateway.log"
    proc = start_gateway(pg_url, redis_url, instance, group, host, port, log)
    devs = [ResendingDevice(host, port, d) for d in ids]
    per_device = 150
    done = asyncio.Event()
    runs = [asyncio.create_task(d.run([f"e{i:04d}" for i in range(per_device)], 100, done)) for d in devs]
    try:
        # kill it once a third of the events are acked, while devices keep sending
        deadline = time.monotonic() + 30
        while sum(len(d.acked) for d in devs) < per_device and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        killed_at = sum(len(d.acked) for d in devs)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await asyncio.sleep(1.0)
        t_restart = time.monotonic()
        proc = start_gateway(pg_url, redis_url, instance, group, host, port, log)
        await wait_all_acked(devs, per_device * len(devs), 60)
        recovery = time.monotonic() - t_restart
        done.set()
        await asyncio.gather(*runs)
        async with pg_maker() as s:
            rows = (await s.execute(select(DeviceEvent.device_id, DeviceEvent.event_id))).all()
        stored = Counter(rows)
        sent = {(d.id, f"e{i:04d}") for d in devs for i in range(per_device)}
        lost = sent - set(stored)
        dupes = [k for k, v in stored.items() if v > 1]
        print(
            f"\nkilled after {killed_at} acks; all {len(sent)} acked {recovery:.2f} s after restart; "
            f"{sum(d.sends for d in devs)} sends; lost {len(lost)}, duplicates {len(dupes)}"
        )
        assert not lost and not dupes and set(stored) == sent
    finally:
        done.set()
        for r in runs:
            r.cancel()
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()
        await forget_session(host, port, f"carecall-gateway-{instance}")


async def test_two_gateway_copies_share_the_load_and_store_each_event_once(
    mosquitto: tuple[str, int],
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    tmp_path: Path,
) -> None:
    host, port = mosquitto
    ids = {uniq("dev"): "hub" for _ in range(4)}
    await add_small_registry(pg_maker, ids)
    group = uniq("grp")
    instances = [uniq("a"), uniq("b")]
    logs = [tmp_path / f"{i}.log" for i in instances]
    procs = [
        start_gateway(pg_url, redis_url, i, group, host, port, log)
        for i, log in zip(instances, logs, strict=True)
    ]
    devs = [ResendingDevice(host, port, d) for d in ids]
    per_device = 200
    done = asyncio.Event()
    try:
        # both copies subscribed before the load starts, both connections (events,
        # readings) each; a fixed 1.5 s before, while two copies starting at once took
        # over 4 s on a loaded 2-core machine
        for log in logs:
            await wait_log(log, "gateway.connected", 60, count=2)
        runs = [asyncio.create_task(d.run([f"e{i:04d}" for i in range(per_device)], 200, done)) for d in devs]
        await wait_all_acked(devs, per_device * len(devs), 60)
        done.set()
        await asyncio.gather(*runs)
        async with pg_maker() as s:
            rows = (
                await s.execute(select(DeviceEvent.device_id, DeviceEvent.event_id, DeviceEvent.gateway))
            ).all()
        per_copy = Counter(r.gateway for r in rows)
        keys = Counter((r.device_id, r.event_id) for r in rows)
        print(f"\nstored per copy: {dict(per_copy)}; sends {sum(d.sends for d in devs)}; rows {len(rows)}")
        assert len(keys) == per_device * len(devs) and max(keys.values()) == 1
        assert len(per_copy) == 2 and min(per_copy.values()) > 0.2 * len(rows), "both copies took a share"
    finally:
        done.set()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()
        for i in instances:
            await forget_session(host, port, f"carecall-gateway-{i}")

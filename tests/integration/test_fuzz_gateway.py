"""100,000 generated malformed payloads through the real gateway on the real Mosquitto:
no crash, every one counted by reason and accounted for in the database, and a good alarm
sent after them still stored."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
import uuid
from collections import Counter

import paho.mqtt.client as paho
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.clock import SystemClock
from config.settings import load_settings
from device_gateway.models import DeviceEvent, RejectedMessage
from device_gateway.mqtt import MqttTarget
from device_gateway.service import Gateway
from dispatcher.registry.service import resident_vitals
from tests.conftest import add_small_registry
from tests.integration.test_gateway_real_services import forget_session

pytestmark = pytest.mark.integration

N = 100_000
RATE = 2_500  # msg/s at most
WINDOW = 500  # published but not yet taken by the gateway


def malformed(rng: random.Random, i: int) -> bytes:
    """One of many ways a device gets a payload wrong; never a valid event."""
    kind = i % 12
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 80)))  # noise
    if kind == 1:
        return b"{" * rng.randint(17, 400)  # nesting
    if kind == 2:
        return json.dumps({"id": rng.random(), "ts": 1764120600123, "type": "sos"}).encode()
    if kind == 3:
        return json.dumps({"id": f"x{i}", "ts": "not a time", "type": "sos"}).encode()
    if kind == 4:
        return json.dumps({"id": f"x{i}", "type": "fall"}).encode()  # ts missing
    if kind == 5:
        return b'{"id":"x","ts":' + b"7" * rng.randint(70, 3000) + b',"type":"sos"}'
    if kind == 6:
        return json.dumps([1, 2, {"id": "x"}]).encode()
    if kind == 7:
        return ("\ud800" + "x").encode("utf-8", "surrogatepass")
    if kind == 8:
        return json.dumps({"id": f"x{i}", "ts": True, "type": "sos"}).encode()
    if kind == 9:
        return json.dumps({"id": "bad id with spaces", "ts": 1764120600123, "type": "sos"}).encode()
    if kind == 10:
        return b'{"id":"x","ts":1764120600123,"type":"sos","data":{"location":{"lat":"north"}}}'
    return b'{"id": "x", "ts": NaN, "type": "sos"}'


async def test_100k_malformed_payloads_through_the_real_gateway(
    mosquitto: tuple[str, int], pg_url: str, pg_maker: async_sessionmaker[AsyncSession], redis_url: str
) -> None:
    host, port = mosquitto
    dev = f"fz-{uuid.uuid4().hex[:6]}"
    await add_small_registry(pg_maker, {dev: "hub"})
    instance = f"fuzz-{uuid.uuid4().hex[:6]}"
    settings = load_settings(
        mqtt_url=f"mqtt://{host}:{port}",
        database_url=pg_url,
        redis_url=redis_url,
        instance=instance,
        mqtt_shared_group=f"g{instance}",
    )
    gw = Gateway(
        settings=settings,
        maker=pg_maker,
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=MqttTarget.from_url(settings.mqtt_url or ""),
        shared_group=settings.mqtt_shared_group,
        residents=resident_vitals,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    try:
        await asyncio.wait_for(gw.connected.wait(), 10)
        rng = random.Random(20261126)
        payloads = [malformed(rng, i) for i in range(N)]
        topic = f"carecall/v1/devices/{dev}/events"

        def publish_all() -> None:
            c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"fuzz-pub-{instance}")
            c.max_inflight_messages_set(100)
            c.max_queued_messages_set(0)
            c.connect(host, port)
            c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
            c.loop_start()
            t0 = time.monotonic()
            infos = []
            base = gw.stats.messages
            for i, body in enumerate(payloads):
                infos.append(c.publish(topic, body, qos=1))
                delay = t0 + (i + 1) / RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                # keep at most WINDOW unprocessed: the stock Mosquitto drops QoS 1
                # messages for a client with more than 1,000 queued, and the point here
                # is the gateway's handling of bad input, not the broker's queue limit
                while i + 1 - (gw.stats.messages - base) > WINDOW:
                    time.sleep(0.005)
            for info in infos[-1000:]:
                info.wait_for_publish(30)
            good = json.dumps({"id": "after-the-storm", "ts": int(time.time() * 1000), "type": "sos"})
            c.publish(topic, good, qos=1).wait_for_publish(10)
            c.disconnect()
            c.loop_stop()

        # Only this device's rejections: the shared broker also replays the retained
        # status of devices other tests left behind (unknown devices here).
        def counted() -> Counter[str]:
            out: Counter[str] = Counter()
            for (device_id, reason), n in gw.rejects.by_device_reason.items():
                if device_id == dev:
                    out[reason] += n
            return out

        t0 = time.monotonic()
        await asyncio.to_thread(publish_all)
        deadline = time.monotonic() + 60
        while sum(counted().values()) < N and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - t0
        by_reason = dict(counted())
        total = sum(by_reason.values())
        print(
            f"\n{total:,} of {N:,} malformed payloads counted in {elapsed:.1f} s; by reason {dict(sorted(by_reason.items()))}"
        )
        assert not task.done(), "the gateway crashed"
        assert total == N, "every malformed payload is counted"
        assert set(by_reason) <= {
            "not_json",
            "not_utf8",
            "too_deep",
            "wrong_type",
            "bad_value",
            "missing_field",
            "not_object",
        }

        async def stored() -> int:
            async with pg_maker() as s:
                return int(
                    await s.scalar(
                        select(func.count()).select_from(DeviceEvent).where(DeviceEvent.device_id == dev)
                    )
                    or 0
                )

        deadline = time.monotonic() + 10
        while await stored() < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await stored() == 1, "the good alarm after the storm is stored"
        await gw._flush()
        async with pg_maker() as s:
            rows, kept = (
                await s.execute(
                    select(func.count(), func.sum(RejectedMessage.messages)).where(
                        RejectedMessage.device_id == dev
                    )
                )
            ).one()
        print(f"{rows:,} rejected_messages rows stand for {kept:,} messages")
        # the first ones one by one (truncated) for inspection, the rest of the flood in
        # per-reason summary rows (device_gateway/limits.py): every one accounted for
        assert kept == N, "each one kept for inspection, one by one or in a summary"
        assert rows < N / 10, "a flood from one device costs a bounded number of rows"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await forget_session(host, port, f"carecall-gateway-{instance}")

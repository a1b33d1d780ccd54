"""One device floods junk at 1,000 messages a second on the real Mosquitto, PostgreSQL and
Redis: another device's SOS is still acked fast, the flooding device's own SOS is taken,
every junk message is counted, and the database holds a bounded number of rows that
still account for every one (issue 10, item 7)."""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import threading
import time
import uuid

import aiomqtt
import paho.mqtt.client as paho
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.models import DeviceEvent, RejectedMessage
from tests.conftest import add_small_registry
from tests.integration.conftest import running_gateway
from tests.integration.test_fuzz_gateway import malformed

pytestmark = pytest.mark.integration

ROOT = "carecall/v1/devices"
FLOOD_RATE = 1_000  # junk messages a second from one device
FLOOD_S = 12
SOS_COUNT = 50
SOS_EVERY_S = 0.2


def flood(host: str, port: int, device: str, stop: threading.Event, sent: list[int]) -> None:
    """Junk on the device's events topic at FLOOD_RATE, QoS 1, until ``stop``; one valid
    SOS of its own in the middle."""
    import random

    rng = random.Random(7)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=device)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]
    c.loop_start()
    topic = f"{ROOT}/{device}/events"
    t0 = time.monotonic()
    i = 0
    last: paho.MQTTMessageInfo | None = None
    try:
        while not stop.is_set() and time.monotonic() - t0 < FLOOD_S:
            if i == FLOOD_RATE * FLOOD_S // 2:
                own = {"id": "flooder-own-sos", "ts": int(time.time() * 1000), "type": "sos"}
                c.publish(topic, json.dumps(own), qos=1)
            last = c.publish(topic, malformed(rng, i), qos=1)
            i += 1
            delay = t0 + i / FLOOD_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    finally:
        sent.append(i)
        if last is not None:
            last.wait_for_publish(60)  # in order: every one before it is with the broker
        c.disconnect()
        c.loop_stop()


async def test_another_devices_sos_is_acked_fast_while_one_device_floods_junk(
    mosquitto: tuple[str, int], pg_url: str, pg_maker: async_sessionmaker[AsyncSession], redis_url: str
) -> None:
    host, port = mosquitto
    flooder, victim = f"fl-{uuid.uuid4().hex[:6]}", f"vi-{uuid.uuid4().hex[:6]}"
    await add_small_registry(pg_maker, {flooder: "hub", victim: "button"})
    async with running_gateway(
        mosquitto, pg_url, pg_maker, redis_url, instance=f"flood-{uuid.uuid4().hex[:6]}"
    ) as gw:
        stop = threading.Event()
        sent: list[int] = []
        latencies: list[float] = []
        published: dict[str, float] = {}
        flooder_acks: list[dict[str, str]] = []
        async with aiomqtt.Client(host, port, identifier=victim, clean_session=True) as c:
            await c.subscribe(f"{ROOT}/{victim}/ack", qos=1)

            async def read_acks() -> None:
                async for m in c.messages:
                    body = json.loads(m.payload)  # type: ignore[arg-type]
                    t = published.get(body.get("event_id"))
                    if body.get("state") == "received" and t is not None:
                        latencies.append(time.monotonic() - t)
                        published.pop(body["event_id"])

            async with aiomqtt.Client(host, port, identifier=f"{flooder}-ack-reader") as ar:
                await ar.subscribe(f"{ROOT}/{flooder}/ack", qos=1)

                async def read_flooder_acks() -> None:
                    async for m in ar.messages:
                        flooder_acks.append(json.loads(m.payload))  # type: ignore[arg-type]

                reader = asyncio.create_task(read_acks())
                fl_reader = asyncio.create_task(read_flooder_acks())
                flood_thread = asyncio.create_task(asyncio.to_thread(flood, host, port, flooder, stop, sent))
                try:
                    await asyncio.sleep(2.0)  # the flood is in full swing
                    for i in range(SOS_COUNT):
                        ev = f"v-{i:03d}"
                        body = json.dumps({"id": ev, "ts": int(time.time() * 1000), "type": "sos"})
                        published[ev] = time.monotonic()
                        await c.publish(f"{ROOT}/{victim}/events", body, qos=1)  # once: no resend
                        await asyncio.sleep(SOS_EVERY_S)
                    deadline = time.monotonic() + 30
                    while len(latencies) < SOS_COUNT and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                finally:
                    stop.set()
                    await flood_thread
                    reader.cancel()
                # every junk message counted, exactly
                total = sent[0]
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    mine = sum(n for (d, _), n in gw.rejects.by_device_reason.items() if d == flooder)
                    if mine >= total:
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(1.0)  # the last acks reach the reader
                fl_reader.cancel()

        ms = sorted(x * 1000 for x in latencies)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan")
        rejected_acks = sum(1 for a in flooder_acks if a.get("state") == "rejected")
        print(
            f"\nvictim SOS acked {len(ms)}/{SOS_COUNT} during a {FLOOD_RATE}/s junk flood ({total} sent): "
            f"median {statistics.median(ms) if ms else float('nan'):.1f} ms, p99 {p99:.1f} ms, "
            f"max {ms[-1] if ms else float('nan'):.1f} ms; flooder got {rejected_acks} rejected acks"
        )
        inside = sorted(gw.stats.ack_latencies_ms)
        if inside:
            print(
                f"inside the gateway (arrival → ack published): median {statistics.median(inside):.1f} ms, "
                f"max {inside[-1]:.1f} ms"
            )
        assert len(ms) == SOS_COUNT, "every SOS of the other device acked (each sent once)"
        # containment, not speed (the bench's flood phase measures that): before the fix the
        # SOS waited behind the junk, median 12.9 s; a machine at load 12-15 gave 3.1 s here
        assert statistics.median(ms) < 5000 and p99 < 10_000, "not behind the flood (before: median 12.9 s)"
        mine = sum(n for (d, _), n in gw.rejects.by_device_reason.items() if d == flooder)
        assert mine == total, "every junk message counted"
        assert any(
            a.get("event_id") == "flooder-own-sos" and a.get("state") == "received" for a in flooder_acks
        ), "the flooding device's own valid SOS is taken and acked"
        assert rejected_acks < total / 5, "rejected acks are rate-limited"

        await gw._flush()
        async with pg_maker() as s:
            rows, accounted = (
                await s.execute(
                    select(func.count(), func.sum(RejectedMessage.messages)).where(
                        RejectedMessage.device_id == flooder
                    )
                )
            ).one()
            own = await s.scalar(
                select(func.count())
                .select_from(DeviceEvent)
                .where(DeviceEvent.device_id == flooder, DeviceEvent.event_id == "flooder-own-sos")
            )
        print(f"rejected_messages rows for the flooder: {rows}, standing for {accounted} messages")
        assert accounted == total, "rows and summaries account for every junk message"
        assert rows < total / 5, "a flood costs a bounded number of rows"
        assert own == 1

"""Registry changes reach the gateway at once (issue 10, item 6), and one device's junk does
not delay another device's alarm (item 7): on the embedded broker and SQLite.

The device's messages are published with the platform account where the test is about the
gateway's answer: the broker may (rightly) drop a disabled device's own connection, and
the gateway must refuse its messages all the same."""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import httpx
import paho.mqtt.client as paho
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.clock import SystemClock
from carecall.shell.app import create_app
from config.settings import load_settings
from device_gateway.broker import EmbeddedBroker
from device_gateway.changes import DEVICES_CHANNEL
from device_gateway.credentials import hash_secret
from device_gateway.models import RejectedMessage
from device_gateway.mqtt import MqttTarget
from device_gateway.service import Gateway
from dispatcher.auth import passwords as auth
from dispatcher.auth.models import User
from dispatcher.auth.tokens import TokenSigner
from dispatcher.auth.users import ensure_admin
from dispatcher.registry.service import resident_vitals
from tests.conftest import add_small_registry

ROOT = "carecall/v1/devices"
SIGNER = TokenSigner(b"g" * 32)
SECRETS = {"hub": "hub-secret-0123456789ab", "btn": "btn-secret-0123456789ab"}
PLATFORM = ("platform", "pw-123456")


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
async def stack(maker: async_sessionmaker[AsyncSession], db_url: str) -> AsyncIterator[dict[str, Any]]:
    """Embedded broker, gateway and API sharing one in-memory bus, as `carecall demo` does."""
    await add_small_registry(
        maker, {"hub": "hub", "btn": "button"}, secret_hashes={k: hash_secret(v) for k, v in SECRETS.items()}
    )
    await ensure_admin(maker, password="admin-password", now=datetime.now(UTC))
    async with maker() as s:
        admin = await s.scalar(select(User).where(User.username == "admin"))
        assert admin is not None
        token = SIGNER.issue(admin.id, datetime.now(UTC))
    broker = EmbeddedBroker(
        host="127.0.0.1", port=0, maker=maker, platform_username=PLATFORM[0], platform_password=PLATFORM[1]
    )
    await broker.start()
    bus = MemoryBus()
    gw = Gateway(
        settings=load_settings(database_url=db_url, state_flush_interval_s=0.5),
        maker=maker,
        bus=bus,
        clock=SystemClock(),
        mqtt=MqttTarget("127.0.0.1", broker.port, *PLATFORM, tls=False),
        shared_group=None,
        residents=resident_vitals,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    await asyncio.wait_for(gw.connected.wait(), 10)
    await asyncio.sleep(0.2)  # the gateway's bus subscription is in place
    app = create_app(maker, signer=SIGNER, bus=bus)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        http.headers["Authorization"] = f"Bearer {token}"
        yield {"gw": gw, "port": broker.port, "maker": maker, "http": http, "bus": bus}
    stop.set()
    await asyncio.wait_for(task, 15)
    await broker.stop()


def platform_client(port: int, name: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1", port, identifier=name, username=PLATFORM[0], password=PLATFORM[1], clean_session=True
    )


def sos(event_id: str) -> bytes:
    return json.dumps({"id": event_id, "ts": int(time.time() * 1000), "type": "sos"}).encode()


async def first_answer(
    c: aiomqtt.Client, dev: str, state: str, timeout: float = 10.0
) -> tuple[float, dict[str, Any]]:
    """Send an SOS every 0.1 s (new id each) until one is answered ``state``; returns when."""
    answers: dict[str, dict[str, Any]] = {}

    async def read() -> None:
        async for m in c.messages:
            body = json.loads(m.payload)  # type: ignore[arg-type]
            answers[body.get("event_id", "")] = body

    reader = asyncio.create_task(read())
    try:
        deadline = time.monotonic() + timeout
        i = 0
        while time.monotonic() < deadline:
            ev = f"try-{time.monotonic_ns()}-{i}"
            await c.publish(f"{ROOT}/{dev}/events", sos(ev), qos=1)
            i += 1
            await asyncio.sleep(0.1)
            for body in list(answers.values()):
                if body.get("state") == state:
                    return time.monotonic(), body
        raise AssertionError(f"no {state!r} ack in {timeout} s; got {list(answers.values())[-3:]}")
    finally:
        reader.cancel()


async def test_a_device_disabled_through_the_api_is_refused_within_2_s(stack: dict[str, Any]) -> None:
    http: httpx.AsyncClient = stack["http"]
    async with platform_client(stack["port"], "as-hub") as c:
        await c.subscribe(f"{ROOT}/hub/ack", qos=1)
        await first_answer(c, "hub", "received")  # enabled: taken

        r = await http.patch("/api/v1/devices/hub", json={"enabled": False})
        assert r.status_code == 200, r.text
        t0 = time.monotonic()
        t, body = await first_answer(c, "hub", "rejected")
        print(f"\ndisabled device refused {1000 * (t - t0):.0f} ms after the API answered")
        assert body["reason"].startswith("disabled_device")
        assert t - t0 < 2.0, "refused within 2 s, not after the minute's directory refresh"

        r = await http.patch("/api/v1/devices/hub", json={"enabled": True})
        assert r.status_code == 200, r.text
        t0 = time.monotonic()
        t, _ = await first_answer(c, "hub", "received")
        assert t - t0 < 2.0, "switched back on at once too"


async def test_a_rekeyed_device_keeps_working_with_its_new_secret(stack: dict[str, Any]) -> None:
    http: httpx.AsyncClient = stack["http"]
    r = await http.post("/api/v1/devices/btn/rekey")
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    assert secret != SECRETS["btn"]
    async with aiomqtt.Client(
        "127.0.0.1", stack["port"], identifier="btn", username="btn", password=secret, clean_session=True
    ) as c:
        await c.subscribe(f"{ROOT}/btn/ack", qos=1)
        await first_answer(c, "btn", "received", timeout=5)


async def test_a_device_created_through_the_api_is_taken_at_once(stack: dict[str, Any]) -> None:
    """A gateway caches an unknown device id for a minute; creating it ends that."""
    gw: Gateway = stack["gw"]
    http: httpx.AsyncClient = stack["http"]
    async with platform_client(stack["port"], "as-new") as c:
        await c.subscribe(f"{ROOT}/new-1/ack", qos=1)
        await c.publish(f"{ROOT}/new-1/events", sos("before"), qos=1)
        deadline = time.monotonic() + 5
        while gw.rejects.by_device_reason.get(("new-1", "unknown_device"), 0) < 1:
            assert time.monotonic() < deadline, "unknown device counted"
            await asyncio.sleep(0.05)
        r = await http.post("/api/v1/devices", json={"id": "new-1", "home_id": "h1", "kind": "watch"})
        assert r.status_code == 201, r.text
        t0 = time.monotonic()
        t, _ = await first_answer(c, "new-1", "received")
        assert t - t0 < 2.0


async def test_registry_changes_are_announced_after_commit(stack: dict[str, Any]) -> None:
    bus: MemoryBus = stack["bus"]
    http: httpx.AsyncClient = stack["http"]
    seen: list[dict[str, Any]] = []

    async def listen() -> None:
        async for msg in bus.subscribe(DEVICES_CHANNEL):
            seen.append(msg)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.05)
    assert (await http.patch("/api/v1/devices/btn", json={"enabled": False})).status_code == 200
    assert (await http.post("/api/v1/devices/btn/rekey")).status_code == 200
    assert (
        await http.post("/api/v1/devices", json={"id": "w2", "home_id": "h1", "kind": "watch"})
    ).status_code == 201
    assert (await http.delete("/api/v1/devices/w2")).status_code == 204
    # a refused change announces nothing
    assert (await http.patch("/api/v1/devices/nope", json={"enabled": False})).status_code == 404
    await asyncio.sleep(0.05)
    listener.cancel()
    assert [m["ids"] for m in seen] == [["btn"], ["btn"], ["w2"], ["w2"]]
    assert all(m["by"] == "admin" for m in seen)
    assert stack["gw"].directory.cached("w2") is None, "the deleted device is forgotten"


# --------------------------------------------------------------------------- item 7

FLOOD_RATE = 150  # junk messages a second from one device (broker, gateway and all in one process)
SOS_COUNT = 15


def _flood(port: int, stop: threading.Event, sent: list[int]) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="hub")
    c.username_pw_set("hub", SECRETS["hub"])
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.monotonic()
    i = 0
    last: paho.MQTTMessageInfo | None = None
    try:
        while not stop.is_set():
            body = b'{"id":"x","ts":NaN,"type":"sos"}' if i % 2 else b"{junk"
            last = c.publish(f"{ROOT}/hub/events", body, qos=1)
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


async def test_another_devices_sos_is_acked_fast_while_one_device_floods_junk(stack: dict[str, Any]) -> None:
    gw: Gateway = stack["gw"]
    stop = threading.Event()
    sent: list[int] = []
    flood = asyncio.create_task(asyncio.to_thread(_flood, stack["port"], stop, sent))
    latencies: list[float] = []
    try:
        await asyncio.sleep(2.0)  # the flood is under way
        async with aiomqtt.Client(
            "127.0.0.1", stack["port"], identifier="btn", username="btn", password=SECRETS["btn"]
        ) as c:
            await c.subscribe(f"{ROOT}/btn/ack", qos=1)
            for i in range(SOS_COUNT):
                t0 = time.monotonic()
                await c.publish(f"{ROOT}/btn/events", sos(f"v-{i}"), qos=1)
                async with asyncio.timeout(10):
                    async for m in c.messages:
                        body = json.loads(m.payload)  # type: ignore[arg-type]
                        if body.get("event_id") == f"v-{i}" and body.get("state") == "received":
                            latencies.append(time.monotonic() - t0)
                            break
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await flood
    total = sent[0]
    deadline = time.monotonic() + 30
    while sum(n for (d, _), n in gw.rejects.by_device_reason.items() if d == "hub") < total:
        assert time.monotonic() < deadline, "every junk message is counted"
        await asyncio.sleep(0.1)
    ms = sorted(x * 1000 for x in latencies)
    print(
        f"\n{total} junk messages at {FLOOD_RATE}/s from one device; another device's SOS acked "
        f"median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms"
    )
    # Containment, not speed: before the fix the SOS queued behind the junk (median 12.9 s).
    # How fast it is belongs to the bench (`carecall bench --phases flood`); a CI machine at
    # load 11 once took the median past 300 ms here.
    assert statistics.median(ms) < 2000 and ms[-1] < 8000
    await gw._flush()
    async with stack["maker"]() as s:
        rows, accounted = (
            await s.execute(
                select(func.count(), func.sum(RejectedMessage.messages)).where(
                    RejectedMessage.device_id == "hub"
                )
            )
        ).one()
    assert accounted == total and rows < total / 5


async def test_a_devices_file_import_switching_a_device_off_is_refused_within_2_s(
    stack: dict[str, Any], tmp_path: Any
) -> None:
    from dispatcher.registry.importing import import_file

    path = tmp_path / "devices.csv"
    path.write_text("id,home_id,kind,enabled\nhub,h1,hub,false\n", encoding="utf-8")
    async with platform_client(stack["port"], "as-hub-import") as c:
        await c.subscribe(f"{ROOT}/hub/ack", qos=1)
        await first_answer(c, "hub", "received")
        await import_file(stack["maker"], path, bus=stack["bus"], by="import-test")
        t0 = time.monotonic()
        t, body = await first_answer(c, "hub", "rejected")
    assert body["reason"].startswith("disabled_device") and t - t0 < 2.0

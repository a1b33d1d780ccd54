"""The embedded broker holds the device contract (docs/protocol.md "Who is on the line") on its own:
logins against the registry, per-device topics, and the MQTT features the gateway
relies on (QoS 1, retained status, wills, persistent sessions)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.db import session_scope
from device_gateway.broker import (
    AUTH_CACHE_TTL_S,
    AccessPolicy,
    EmbeddedBroker,
    Principal,
    may_publish,
    may_receive,
    may_subscribe,
)
from device_gateway.credentials import hash_secret
from device_gateway.models import Device
from device_gateway.protocol import AckState, ack_payload
from dispatcher.registry.models import Home, Station

PLATFORM_USER = "carecall-platform"
PLATFORM_PASSWORD = "platform-pw-for-tests"
SECRETS = {"dev-a": "secret-a", "dev-b": "secret-b", "dev-off": "secret-off", "gen-1": "secret-gen"}
WAIT_S = 3.0


def events(device_id: str) -> str:
    return f"carecall/v1/devices/{device_id}/events"


def topic(device_id: str, channel: str) -> str:
    return f"carecall/v1/devices/{device_id}/{channel}"


async def seed(maker: async_sessionmaker[AsyncSession]) -> None:
    now = datetime.now(UTC)
    async with session_scope(maker) as s:
        s.add(
            Station(
                id="st-1",
                name="Station",
                tier="community",
                kind="community_station",
                lat=32.0,
                lon=112.0,
            )
        )
        await s.flush()
        s.add(Home(id="home-1", station_id="st-1", address="1 Test Road", lat=32.0, lon=112.0))
        await s.flush()
        for device_id, secret in SECRETS.items():
            s.add(
                Device(
                    id=device_id,
                    home_id="home-1",
                    kind="hub",
                    enabled=device_id != "dev-off",
                    privileged=device_id == "gen-1",
                    secret_hash=hash_secret(secret),
                    created_at=now,
                )
            )
        s.add(Device(id="dev-nosecret", home_id="home-1", kind="button", secret_hash=None, created_at=now))


@pytest.fixture
async def maker(maker: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """The shared per-test database (tests/conftest.py, --db), seeded."""
    await seed(maker)
    return maker


@pytest.fixture
async def broker(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(
        host="127.0.0.1",
        port=0,
        maker=maker,
        platform_username=PLATFORM_USER,
        platform_password=PLATFORM_PASSWORD,
    ) as b:
        yield b


def device_client(
    broker: EmbeddedBroker,
    device_id: str,
    secret: str | None = None,
    *,
    identifier: str | None = None,
    clean_session: bool | None = None,
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=identifier or device_id,
        username=device_id,
        password=SECRETS.get(device_id, "") if secret is None else secret,
        clean_session=clean_session,
        timeout=WAIT_S,
    )


def platform_client(
    broker: EmbeddedBroker, identifier: str = "gw-test", *, clean_session: bool | None = None
) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=identifier,
        username=PLATFORM_USER,
        password=PLATFORM_PASSWORD,
        clean_session=clean_session,
        timeout=WAIT_S,
    )


def granted(result: tuple[int, ...] | list[ReasonCode]) -> list[int]:
    """SUBACK return codes as numbers (0x80 = refused), whatever paho hands back."""
    return [code.value if isinstance(code, ReasonCode) else int(code) for code in result]


async def next_message(client: aiomqtt.Client, wait_s: float = WAIT_S) -> aiomqtt.Message:
    async with asyncio.timeout(wait_s):
        return await anext(client.messages)


async def refused(client: aiomqtt.Client) -> bool:
    try:
        async with client:
            return False
    except aiomqtt.MqttError:
        return True


# --------------------------------------------------------------------------- logins


async def test_device_publishes_own_events_and_platform_receives(broker: EmbeddedBroker) -> None:
    async with platform_client(broker) as gw, device_client(broker, "dev-a") as dev:
        await gw.subscribe("carecall/v1/devices/+/events", qos=1)
        await dev.publish(events("dev-a"), b'{"id":"e1","ts":1764120600123,"type":"sos"}', qos=1)
        msg = await next_message(gw)
        assert msg.topic.value == events("dev-a")
        assert msg.payload == b'{"id":"e1","ts":1764120600123,"type":"sos"}'
        assert msg.qos == 1


@pytest.mark.parametrize(
    ("username", "password", "identifier"),
    [
        ("dev-a", "wrong-secret", "dev-a"),  # wrong secret
        ("dev-off", "secret-off", "dev-off"),  # disabled
        ("dev-x", "whatever", "dev-x"),  # unknown
        ("dev-nosecret", "anything", "dev-nosecret"),  # no secret issued
        ("dev-a", "secret-a", "dev-b"),  # right secret, someone else's client id
        (PLATFORM_USER, "not-the-password", "gw-x"),
    ],
)
async def test_bad_logins_are_refused(
    broker: EmbeddedBroker, username: str, password: str, identifier: str
) -> None:
    client = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=identifier,
        username=username,
        password=password,
        timeout=WAIT_S,
    )
    assert await refused(client)


async def test_anonymous_is_refused(broker: EmbeddedBroker) -> None:
    assert await refused(aiomqtt.Client("127.0.0.1", broker.port, identifier="anon", timeout=WAIT_S))


@pytest.mark.parametrize("clean_session", [True, False])
async def test_refused_login_cannot_disturb_a_connected_device(
    broker: EmbeddedBroker, clean_session: bool
) -> None:
    """Stock amqtt deletes or takes over the session of the presented client id before it
    checks the password; a stranger must not be able to cut a device off that way."""
    async with platform_client(broker) as gw, device_client(broker, "dev-a") as dev:
        await gw.subscribe(events("dev-a"), qos=1)
        await dev.subscribe(topic("dev-a", "ack"), qos=1)
        assert await refused(device_client(broker, "dev-a", secret="wrong", clean_session=clean_session))
        await dev.publish(events("dev-a"), b"still-here", qos=1)
        assert (await next_message(gw)).payload == b"still-here"
        await gw.publish(topic("dev-a", "ack"), b"still-subscribed", qos=1)
        assert (await next_message(dev)).payload == b"still-subscribed"


async def test_successful_logins_are_cached(broker: EmbeddedBroker) -> None:
    for _ in range(3):
        async with device_client(broker, "dev-a"):
            pass
    assert broker.policy.db_lookups == 1


async def test_cache_expires_and_failures_are_not_cached(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    now = [1000.0]
    policy = AccessPolicy(
        maker, platform_username=PLATFORM_USER, platform_password="pw", clock=lambda: now[0]
    )
    ok = await policy.authenticate(client_id="gen-1", username="gen-1", password="secret-gen")
    assert ok == Principal("gen-1", privileged=True)
    assert await policy.authenticate(client_id="gen-1", username="gen-1", password="secret-gen") == ok
    assert policy.db_lookups == 1
    assert await policy.authenticate(client_id="gen-1", username="gen-1", password="nope") is None
    assert await policy.authenticate(client_id="gen-1", username="gen-1", password="nope") is None
    assert policy.db_lookups == 3
    now[0] += AUTH_CACHE_TTL_S + 1
    assert await policy.authenticate(client_id="gen-1", username="gen-1", password="secret-gen") == ok
    assert policy.db_lookups == 4
    assert await policy.authenticate(client_id="x", username=PLATFORM_USER, password="pw") == Principal(
        PLATFORM_USER, platform=True
    )


# --------------------------------------------------------------------------- topics


def test_topic_rules() -> None:
    dev = Principal("dev-a")
    gen = Principal("gen-1", privileged=True)
    gw = Principal(PLATFORM_USER, platform=True)
    for ch in ("events", "telemetry", "status"):
        assert may_publish(dev, topic("dev-a", ch))
        assert not may_publish(dev, topic("dev-b", ch))
        assert may_publish(gen, topic("dev-b", ch))
    for ch in ("ack", "config"):
        assert not may_publish(dev, topic("dev-a", ch))
        assert not may_publish(gen, topic("dev-b", ch))
        assert may_subscribe(dev, topic("dev-a", ch))
        assert may_receive(dev, topic("dev-a", ch))
        assert not may_subscribe(dev, topic("dev-b", ch))
        assert not may_subscribe(gen, topic("dev-b", ch))
    assert not may_subscribe(dev, "carecall/v1/devices/dev-a/+")
    assert not may_subscribe(dev, "#")
    assert not may_publish(dev, "carecall/v1/devices/dev-a/events/extra")
    assert may_publish(gw, topic("dev-a", "ack"))
    assert may_subscribe(gw, "carecall/v1/devices/+/events")
    assert may_subscribe(gw, "$share/carecall-gateway/carecall/v1/devices/+/events")
    assert not may_subscribe(gw, "$share/carecall-gateway/other/#")
    assert not may_subscribe(gw, "$share//carecall/#")
    assert not may_subscribe(gw, "#")
    assert not may_publish(gw, "other/topic")


async def test_publish_under_another_device_is_dropped(broker: EmbeddedBroker) -> None:
    async with platform_client(broker) as gw, device_client(broker, "dev-a") as dev:
        await gw.subscribe("carecall/#", qos=1)
        await dev.publish(events("dev-b"), b"forged", qos=1)
        await dev.publish(topic("dev-a", "ack"), b"downlink-forged", qos=1)
        await dev.publish("carecall/other", b"outside", qos=1)
        await dev.publish(events("dev-a"), b"marker", qos=1)
        # The broker forwards in order, so anything not dropped would have come first.
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload) == (events("dev-a"), b"marker")


async def test_device_cannot_subscribe_to_another_devices_ack(broker: EmbeddedBroker) -> None:
    async with platform_client(broker) as gw, device_client(broker, "dev-a") as dev:
        denied = await dev.subscribe(topic("dev-b", "ack"), qos=1)
        assert granted(denied) == [0x80]
        assert granted(await dev.subscribe(topic("dev-a", "ack"), qos=1)) == [1]
        await gw.publish(topic("dev-b", "ack"), b"for-b", qos=1)
        await gw.publish(topic("dev-a", "ack"), b"for-a", qos=1)
        msg = await next_message(dev)
        assert (msg.topic.value, msg.payload) == (topic("dev-a", "ack"), b"for-a")


async def test_privileged_device_publishes_for_others(broker: EmbeddedBroker) -> None:
    async with platform_client(broker) as gw, device_client(broker, "gen-1") as gen:
        await gw.subscribe("carecall/#", qos=1)
        await gen.publish(topic("dev-b", "ack"), b"no-downlink", qos=1)
        await gen.publish(events("dev-b"), b"on-behalf", qos=1)
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload) == (events("dev-b"), b"on-behalf")


async def test_retained_downlink_of_others_never_reaches_a_device(broker: EmbeddedBroker) -> None:
    async with platform_client(broker) as gw:
        await gw.subscribe("carecall/v1/devices/+/config", qos=1)
        await gw.publish(topic("dev-b", "config"), b'{"heartbeat_s":60}', qos=1, retain=True)
        await gw.publish(topic("dev-a", "config"), b'{"heartbeat_s":30}', qos=1, retain=True)
        # amqtt 0.12.1 would replay every retained message matching *any* subscription on
        # connect; only the device's own, subscribed config may arrive.
        async with device_client(broker, "dev-a", clean_session=False) as dev:
            await dev.subscribe(topic("dev-a", "config"), qos=1)
            msg = await next_message(dev)
            assert msg.topic.value == topic("dev-a", "config")
            assert msg.retain
        async with device_client(broker, "dev-a", clean_session=False) as dev:
            msg = await next_message(dev)
            assert msg.topic.value == topic("dev-a", "config")
            with pytest.raises(TimeoutError):
                await next_message(dev, wait_s=0.3)


async def test_shared_subscription_is_served_as_plain(broker: EmbeddedBroker) -> None:
    async with platform_client(broker) as gw, device_client(broker, "dev-a") as dev:
        await gw.subscribe("$share/carecall-gateway/carecall/v1/devices/+/events", qos=1)
        await dev.publish(events("dev-a"), b"shared", qos=1)
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload) == (events("dev-a"), b"shared")


# --------------------------------------------------------------------------- wills, sessions


def _mqtt_str(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


async def connect_with_will(
    broker: EmbeddedBroker, device_id: str, will_topic: str, will_payload: str
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw MQTT 3.1.1 CONNECT with a retained QoS 1 will: client libraries always send
    DISCONNECT on close, and a will is only published when a device drops without one."""
    flags = 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, password, will retain, will QoS 1, will, clean
    body = _mqtt_str("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big")
    body += _mqtt_str(device_id) + _mqtt_str(will_topic) + _mqtt_str(will_payload)
    body += _mqtt_str(device_id) + _mqtt_str(SECRETS[device_id])
    assert len(body) < 128  # one-byte remaining length
    reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    writer.write(bytes([0x10, len(body)]) + body)
    await writer.drain()
    connack = await asyncio.wait_for(reader.readexactly(4), WAIT_S)
    assert connack[:2] == b"\x20\x02"
    return connack[3], reader, writer


async def test_will_on_status_is_delivered_and_retained_when_device_drops(
    broker: EmbeddedBroker,
) -> None:
    status = topic("dev-a", "status")
    async with platform_client(broker) as gw:
        await gw.subscribe(status, qos=1)
        rc, _reader, writer = await connect_with_will(broker, "dev-a", status, '{"state":"offline"}')
        assert rc == 0
        writer.transport.abort()  # the device loses power: no DISCONNECT
        live = await next_message(gw)
        assert (live.topic.value, live.payload) == (status, b'{"state":"offline"}')
    async with platform_client(broker, identifier="gw-late") as late:
        await late.subscribe(status, qos=1)
        kept = await next_message(late)
        assert kept.payload == b'{"state":"offline"}'
        assert kept.retain


async def test_will_under_another_device_refuses_the_login(broker: EmbeddedBroker) -> None:
    rc, _reader, writer = await connect_with_will(
        broker, "dev-a", topic("dev-b", "status"), '{"state":"offline"}'
    )
    writer.transport.abort()
    assert rc == 5  # not authorised


async def test_platform_persistent_session_gets_queued_qos1_event(broker: EmbeddedBroker) -> None:
    async with platform_client(broker, identifier="gw-1", clean_session=False) as gw:
        await gw.subscribe("carecall/v1/devices/+/events", qos=1)
    async with device_client(broker, "dev-a") as dev:
        await dev.publish(events("dev-a"), b"while-gateway-down", qos=1)
    await _until_queued(broker, "gw-1")
    async with platform_client(broker, identifier="gw-1", clean_session=False) as gw:
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload, msg.qos) == (
            events("dev-a"),
            b"while-gateway-down",
            1,
        )
        assert not msg.retain  # queued, not retained: fresh data, not history


async def test_device_persistent_session_gets_queued_qos1_ack(broker: EmbeddedBroker) -> None:
    async with device_client(broker, "dev-b", clean_session=False) as dev:
        await dev.subscribe(topic("dev-b", "ack"), qos=1)
    async with platform_client(broker) as gw:
        await gw.publish(topic("dev-b", "ack"), ack_payload("e1", AckState.received, 1), qos=1)
    await _until_queued(broker, "dev-b")
    async with device_client(broker, "dev-b", clean_session=False) as dev:
        msg = await next_message(dev)
        assert (msg.topic.value, msg.qos) == (topic("dev-b", "ack"), 1)


async def _until_queued(broker: EmbeddedBroker, client_id: str) -> None:
    """Wait until the broker holds a message for the offline session, so the test proves
    the queue and not a race with the reconnect."""
    inner = broker._broker
    assert inner is not None
    for _ in range(100):
        session = inner.sessions.get(client_id, (None, None))[0]
        if session is not None and session.retained_messages_count > 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing queued for {client_id}")


async def test_stop_closes_connected_clients_and_leaves_no_tasks(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    b = EmbeddedBroker(
        host="127.0.0.1",
        port=0,
        maker=maker,
        platform_username=PLATFORM_USER,
        platform_password=PLATFORM_PASSWORD,
    )
    await b.start()
    rc, reader, writer = await connect_with_will(b, "dev-a", topic("dev-a", "status"), "offline")
    assert rc == 0
    await b.stop()
    async with asyncio.timeout(WAIT_S):
        assert await reader.read() == b""  # the broker closed the connection
    writer.close()
    leftovers = [t for t in asyncio.all_tasks() if "stream_connected" in repr(t.get_coro())]
    assert leftovers == []


async def test_start_stop_and_port(maker: async_sessionmaker[AsyncSession]) -> None:
    b = EmbeddedBroker(
        host="127.0.0.1",
        port=0,
        maker=maker,
        platform_username=PLATFORM_USER,
        platform_password="x",
    )
    await b.start()
    try:
        assert b.running and b.port > 0
        with pytest.raises(RuntimeError):
            await b.start()
    finally:
        await b.stop()
    assert not b.running
    await b.stop()  # idempotent


# --------------------------------------------------------------------------- registry changes
# Issue 10 item 6: a device disabled, re-keyed or removed in the registry (the ``devices``
# bus message) is refused and disconnected within 2 s, although its login was cached.

LIMIT_S = 2.0


@pytest.fixture
async def followed(
    broker: EmbeddedBroker,
) -> AsyncIterator[tuple[EmbeddedBroker, MemoryBus]]:
    bus = MemoryBus()
    task = asyncio.create_task(broker.follow(bus))
    async with asyncio.timeout(WAIT_S):
        while not bus._subs.get("devices"):
            await asyncio.sleep(0.01)
    yield broker, bus
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def logs_in(brk: EmbeddedBroker, device_id: str, secret: str) -> bool:
    try:
        async with device_client(brk, device_id, secret):
            return True
    except aiomqtt.MqttError:
        return False


async def until_disconnected(client: aiomqtt.Client, limit_s: float) -> float:
    start = time.monotonic()
    while client._client.is_connected() and time.monotonic() - start < limit_s:
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def change_device(maker: async_sessionmaker[AsyncSession], device_id: str, **values: object) -> None:
    async with session_scope(maker) as s:
        await s.execute(update(Device).where(Device.id == device_id).values(**values))


async def test_disabled_device_is_disconnected_and_refused_within_2s(
    followed: tuple[EmbeddedBroker, MemoryBus], maker: async_sessionmaker[AsyncSession]
) -> None:
    brk, bus = followed
    assert await logs_in(brk, "dev-a", SECRETS["dev-a"])  # now cached
    async with device_client(brk, "dev-a") as live:
        await change_device(maker, "dev-a", enabled=False)
        start = time.monotonic()
        await bus.publish("devices", {"ids": ["dev-a"], "by": "test"})
        assert await until_disconnected(live, LIMIT_S * 2) < LIMIT_S
    assert not await logs_in(brk, "dev-a", SECRETS["dev-a"])
    assert time.monotonic() - start < LIMIT_S
    await change_device(maker, "dev-a", enabled=True)
    await bus.publish("devices", {"ids": ["dev-a"], "by": "test"})
    assert await logs_in(brk, "dev-a", SECRETS["dev-a"])


async def test_rekeyed_device_old_secret_refused_new_secret_works(
    followed: tuple[EmbeddedBroker, MemoryBus], maker: async_sessionmaker[AsyncSession]
) -> None:
    brk, bus = followed
    async with device_client(brk, "dev-b") as live, device_client(brk, "dev-a") as bystander:
        await change_device(maker, "dev-b", secret_hash=hash_secret("secret-b-2"))
        await bus.publish("devices", {"ids": ["dev-b", "dev-a"], "by": "test"})
        assert await until_disconnected(live, LIMIT_S * 2) < LIMIT_S
        await asyncio.sleep(0.2)
        assert bystander._client.is_connected(), "a device whose secret did not change was dropped"
    assert not await logs_in(brk, "dev-b", SECRETS["dev-b"])
    assert await logs_in(brk, "dev-b", "secret-b-2")


async def test_removed_device_is_disconnected_and_bad_messages_change_nothing(
    followed: tuple[EmbeddedBroker, MemoryBus], maker: async_sessionmaker[AsyncSession]
) -> None:
    brk, bus = followed
    async with (
        device_client(brk, "dev-a") as live,
        aiomqtt.Client(
            "127.0.0.1", brk.port, identifier="gw", username=PLATFORM_USER, password=PLATFORM_PASSWORD
        ) as platform,
    ):
        junk: list[Any] = [None, [], {"ids": "dev-a"}, {"ids": [1, None, "../x", "x" * 500]}, {"nothing": 1}]
        for message in junk:
            await bus.publish("devices", message)
        async with session_scope(maker) as s:
            await s.execute(delete(Device).where(Device.id == "dev-a"))
        await bus.publish("devices", {"ids": [PLATFORM_USER, "dev-a"], "by": "test"})
        assert await until_disconnected(live, LIMIT_S * 2) < LIMIT_S
        await asyncio.sleep(0.2)
        assert platform._client.is_connected()
    assert not await logs_in(brk, "dev-a", SECRETS["dev-a"])

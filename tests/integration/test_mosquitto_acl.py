"""A real Mosquitto, configured only by ``write_broker_config``, enforces the device contract:
registry hashes log devices in, dynsec roles confine each device to its own root, the
platform account (shared subscriptions included) sees everything under carecall/, and a
device with valid credentials cannot make anyone else's alarms disappear."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from carecall.core.db import make_engine, make_sessionmaker, session_scope
from carecall.core.migrate import upgrade
from device_gateway.broker_config import BrokerConfigFiles, write_broker_config
from device_gateway.credentials import hash_secret
from device_gateway.models import Device
from dispatcher.registry.models import Home, Station
from tests.integration.own_mosquitto import find_mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

PLATFORM_USER = "carecall-platform"
PLATFORM_PASSWORD = "platform-pw-for-tests"
ADMIN_USER = "carecall-broker-admin"
ADMIN_PASSWORD = "admin-pw-for-tests"
SECRETS = {"dev-a": "secret-a", "dev-b": "secret-b", "dev-off": "secret-off", "gen-1": "secret-gen"}
WAIT_S = 3.0


async def provision(db: Path, out_dir: Path, port: int) -> BrokerConfigFiles:
    engine = make_engine(f"sqlite:///{db}")
    maker = make_sessionmaker(engine)
    now = datetime.now(UTC)
    try:
        async with session_scope(maker) as s:
            s.add(Station(id="st-1", name="S", tier="community", kind="community_station", lat=32, lon=112))
            await s.flush()
            s.add(Home(id="home-1", station_id="st-1", address="1 Test Road", lat=32, lon=112))
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
        return await write_broker_config(
            maker,
            out_dir,
            platform_username=PLATFORM_USER,
            platform_password=PLATFORM_PASSWORD,
            admin_username=ADMIN_USER,
            admin_password=ADMIN_PASSWORD,
            listener_port=port,
        )
    finally:
        await engine.dispose()


def hand_to_broker_user(files: BrokerConfigFiles) -> None:
    """Mosquitto started as root drops to its own user before it reads passwd and acl."""
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for path in (files.conf.parent, files.conf, files.dynsec, files.persistence_dir):
        os.chown(path, user.pw_uid, user.pw_gid)


@pytest.fixture(scope="module")
def mosquitto_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    binary = find_mosquitto()
    db = tmp_path_factory.mktemp("db") / "t.db"
    upgrade(f"sqlite:///{db}")
    # Not under pytest's tmp tree: its 0700 parents would lock out the mosquitto user.
    out_dir = Path(tempfile.mkdtemp(prefix="carecall-mosquitto-"))
    port = free_port()
    files = asyncio.run(provision(db, out_dir, port))
    hand_to_broker_user(files)
    log_path = tmp_path_factory.mktemp("log") / "mosquitto.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(files.conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen on {port}:\n{log_path.read_text()}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()  # only the process this fixture started, by its PID
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(out_dir, ignore_errors=True)


def device(port: int, device_id: str, password: str | None = None) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=device_id,
        username=device_id,
        password=SECRETS.get(device_id, "") if password is None else password,
        timeout=WAIT_S,
    )


def platform(port: int, identifier: str) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=identifier,
        username=PLATFORM_USER,
        password=PLATFORM_PASSWORD,
        timeout=WAIT_S,
    )


def topic(device_id: str, channel: str) -> str:
    return f"carecall/v1/devices/{device_id}/{channel}"


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(WAIT_S):
        return await anext(client.messages)


def granted(result: tuple[int, ...] | list[ReasonCode]) -> list[int]:
    return [code.value if isinstance(code, ReasonCode) else int(code) for code in result]


async def test_device_publishes_its_own_events(mosquitto_port: int) -> None:
    async with platform(mosquitto_port, "gw-it-1") as gw, device(mosquitto_port, "dev-a") as dev:
        await gw.subscribe("carecall/v1/devices/+/events", qos=1)
        await dev.publish(topic("dev-a", "events"), b'{"id":"e1","ts":1764120600123,"type":"sos"}', qos=1)
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload) == (
            topic("dev-a", "events"),
            b'{"id":"e1","ts":1764120600123,"type":"sos"}',
        )


async def test_publish_under_another_device_never_arrives(mosquitto_port: int) -> None:
    async with platform(mosquitto_port, "gw-it-2") as gw, device(mosquitto_port, "dev-a") as dev:
        await gw.subscribe("carecall/#", qos=1)
        await dev.publish(topic("dev-b", "events"), b"forged", qos=1)
        await dev.publish(topic("dev-b", "status"), b'{"state":"offline"}', qos=1)
        await dev.publish(topic("dev-a", "ack"), b"downlink-forged", qos=1)
        await dev.publish(topic("dev-a", "events"), b"marker", qos=1)
        # Mosquitto keeps one publisher's order, so a forged message would come first.
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload) == (topic("dev-a", "events"), b"marker")


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("dev-a", "wrong-secret"),
        ("dev-off", "secret-off"),
        ("dev-x", "x"),
        (PLATFORM_USER, "wrong"),
    ],
)
async def test_bad_credentials_are_refused(mosquitto_port: int, username: str, password: str) -> None:
    client = aiomqtt.Client(
        "127.0.0.1",
        mosquitto_port,
        identifier=username,
        username=username,
        password=password,
        timeout=WAIT_S,
    )
    with pytest.raises(aiomqtt.MqttError):
        async with client:
            pass


async def test_device_reads_only_its_own_downlink(mosquitto_port: int) -> None:
    """dynsec refuses the SUBSCRIBE for another device's downlink or a wildcard (as the
    embedded broker does), and nothing but the device's own ack arrives."""
    async with platform(mosquitto_port, "gw-it-3") as gw, device(mosquitto_port, "dev-a") as dev:
        assert await try_subscribe(dev, topic("dev-b", "ack")) == [128]
        assert await try_subscribe(dev, "carecall/v1/devices/+/config") == [128]
        assert granted(await dev.subscribe(topic("dev-a", "ack"), qos=1)) == [1]
        await gw.publish(topic("dev-b", "ack"), b"for-b", qos=1)
        await gw.publish(topic("dev-b", "config"), b"config-b", qos=1)
        await gw.publish(topic("dev-a", "ack"), b"for-a", qos=1)
        msg = await next_message(dev)
        assert (msg.topic.value, msg.payload) == (topic("dev-a", "ack"), b"for-a")


async def test_platform_shared_subscription_is_allowed(mosquitto_port: int) -> None:
    """dynsec checks a shared subscription with its ``$share/<group>/`` prefix: the platform
    role has ``subscribePattern $share/+/carecall/#`` for it (without it: SUBACK 128)."""
    async with platform(mosquitto_port, "gw-it-4") as gw, device(mosquitto_port, "dev-b") as dev:
        shared = "$share/carecall-gateway/carecall/v1/devices/+/events"
        assert granted(await gw.subscribe(shared, qos=1)) == [1]
        await dev.publish(topic("dev-b", "events"), b"shared", qos=1)
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload) == (topic("dev-b", "events"), b"shared")


async def test_privileged_device_publishes_uplink_for_others(mosquitto_port: int) -> None:
    async with platform(mosquitto_port, "gw-it-5") as gw, device(mosquitto_port, "gen-1") as gen:
        await gw.subscribe("carecall/#", qos=1)
        await gen.publish(topic("dev-b", "ack"), b"no-downlink", qos=1)
        await gen.publish(topic("dev-b", "telemetry"), b"on-behalf", qos=1)
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload) == (topic("dev-b", "telemetry"), b"on-behalf")


# --------------------------------------------------------------------------- device attacks
# Issue 10 item 5: with valid credentials of its own, a device must not be able to make
# anyone else's alarms disappear.

GATEWAY_GROUP = "carecall-gateway"
GATEWAY_FILTERS = [f"carecall/v1/devices/+/{ch}" for ch in ("events", "status", "telemetry")]


def connected(client: aiomqtt.Client) -> bool:
    return bool(client._client.is_connected())


async def try_subscribe(client: aiomqtt.Client, topic_filter: str) -> list[int]:
    """The granted codes, or [128] when the broker answers the SUBSCRIBE by hanging up."""
    try:
        return granted(await client.subscribe(topic_filter, qos=1))
    except aiomqtt.MqttError:
        return [128]


async def test_device_cannot_take_a_share_of_the_gateways_events(mosquitto_port: int) -> None:
    """A device joining the gateway's shared group got every other SOS and the broker
    dropped them (it may not read them). Every victim SOS must reach the platform."""
    async with platform(mosquitto_port, "carecall-gateway-att") as gw:
        for f in GATEWAY_FILTERS:
            await gw.subscribe(f"$share/{GATEWAY_GROUP}/{f}", qos=1)
        async with device(mosquitto_port, "dev-a") as attacker, device(mosquitto_port, "dev-b") as victim:
            codes = [await try_subscribe(attacker, f"$share/{GATEWAY_GROUP}/{f}") for f in GATEWAY_FILTERS]
            codes.append(await try_subscribe(attacker, f"$share/{GATEWAY_GROUP}/carecall/#"))
            sent = [f'{{"id":"sos-{i}","ts":1764120600123,"type":"sos"}}'.encode() for i in range(20)]
            for payload in sent:
                await victim.publish(topic("dev-b", "events"), payload, qos=1)
            got: list[bytes] = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT_S):
                    async for msg in gw.messages:
                        got.append(bytes(msg.payload))  # type: ignore[arg-type]
                        if len(got) == len(sent):
                            break
        assert sorted(got) == sorted(sent), f"lost {len(sent) - len(got)} of 20 SOS; attacker SUBACKs {codes}"
        assert all(c == [128] for c in codes), codes


async def test_device_cannot_connect_with_another_devices_client_id(mosquitto_port: int) -> None:
    async with platform(mosquitto_port, "gw-it-att-b") as gw, device(mosquitto_port, "dev-b") as victim:
        await gw.subscribe(topic("dev-b", "status"), qos=1)
        attacker = aiomqtt.Client(
            "127.0.0.1",
            mosquitto_port,
            identifier="dev-b",
            username="dev-a",
            password=SECRETS["dev-a"],
            timeout=WAIT_S,
        )
        with pytest.raises(aiomqtt.MqttError):
            async with attacker:
                pass
        await asyncio.sleep(0.5)
        assert connected(victim), "the victim was kicked off by a device using its client id"
        await victim.publish(topic("dev-b", "status"), b'{"state":"online"}', qos=1)
        msg = await next_message(gw)
        assert (msg.topic.value, msg.payload) == (topic("dev-b", "status"), b'{"state":"online"}')


async def test_device_cannot_connect_with_a_gateway_client_id(mosquitto_port: int) -> None:
    async with platform(mosquitto_port, "carecall-gateway-9") as gw:
        await gw.subscribe(f"$share/{GATEWAY_GROUP}/carecall/v1/devices/+/events", qos=1)
        for _ in range(3):
            attacker = aiomqtt.Client(
                "127.0.0.1",
                mosquitto_port,
                identifier="carecall-gateway-9",
                username="dev-a",
                password=SECRETS["dev-a"],
                timeout=WAIT_S,
            )
            with pytest.raises(aiomqtt.MqttError):
                async with attacker:
                    pass
        await asyncio.sleep(0.5)
        assert connected(gw), "the gateway was kicked off by a device using its client id"
        async with device(mosquitto_port, "dev-b") as dev:
            await dev.publish(topic("dev-b", "events"), b"after-attack", qos=1)
        msg = await next_message(gw)
        assert msg.payload == b"after-attack"

"""Issue 10 item 6 on Mosquitto: a device disabled, re-keyed or removed in the registry is
refused and disconnected within 2 s, through the ``devices`` bus message and the broker
sync's dynsec commands (the broker configured only by ``broker-config``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.db import make_engine, make_sessionmaker, session_scope
from carecall.core.migrate import upgrade
from device_gateway.broker_config import BrokerConfigFiles
from device_gateway.broker_sync import BrokerSync
from device_gateway.credentials import hash_secret
from device_gateway.models import Device
from device_gateway.mqtt import MqttTarget
from tests.integration.test_mosquitto_acl import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    SECRETS,
    WAIT_S,
    connected,
    device,
    find_mosquitto,
    free_port,
    hand_to_broker_user,
    provision,
)

pytestmark = pytest.mark.integration

LIMIT_S = 2.0


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A Mosquitto of this test's own (the sync changes its state) and the registry file."""
    binary = find_mosquitto()
    db = tmp_path_factory.mktemp("db") / "t.db"
    upgrade(f"sqlite:///{db}")
    out_dir = Path(tempfile.mkdtemp(prefix="carecall-mosquitto-"))
    port = free_port()
    files = asyncio.run(provision(db, out_dir, port))
    hand_to_broker_user(files)
    try:
        with run_mosquitto(binary, files.conf, port, tmp_path_factory.mktemp("log") / "mosquitto.log"):
            yield port, db
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


@contextlib.contextmanager
def run_mosquitto(binary: str, conf: Path, port: int, log_path: Path) -> Iterator[None]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
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
        yield
    finally:
        proc.terminate()  # only the process this helper started, by its PID
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
async def maker(broker: tuple[int, Path]) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(f"sqlite:///{broker[1]}")
    yield make_sessionmaker(engine)
    await engine.dispose()


def admin_target(port: int) -> MqttTarget:
    return MqttTarget("127.0.0.1", port, ADMIN_USER, ADMIN_PASSWORD, tls=False)


async def can_login(port: int, device_id: str, password: str) -> bool:
    try:
        async with device(port, device_id, password):
            return True
    except aiomqtt.MqttError:
        return False


async def until_disconnected(client: aiomqtt.Client, limit_s: float) -> float:
    start = time.monotonic()
    while connected(client):
        if time.monotonic() - start > limit_s:
            break
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def following(sync: BrokerSync, bus: MemoryBus) -> AsyncIterator[None]:
    task = asyncio.create_task(sync.follow(bus))
    try:
        async with asyncio.timeout(WAIT_S * 2):
            while not bus._subs.get("devices"):  # subscribed once the start-up reconcile is done
                await asyncio.sleep(0.01)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_disabled_device_is_disconnected_and_refused_within_2s(
    broker: tuple[int, Path], maker: async_sessionmaker[AsyncSession]
) -> None:
    port = broker[0]
    bus = MemoryBus()
    sync = BrokerSync(maker, admin_target(port), name="sync-test")
    async with following(sync, bus), device(port, "dev-a") as live:
        assert connected(live)
        async with session_scope(maker) as s:
            await s.execute(update(Device).where(Device.id == "dev-a").values(enabled=False))
        start = time.monotonic()
        await bus.publish("devices", {"ids": ["dev-a"], "by": "test"})
        await until_disconnected(live, LIMIT_S * 2)
        dropped_after = time.monotonic() - start
        refused = not await can_login(port, "dev-a", SECRETS["dev-a"])
        refused_after = time.monotonic() - start
    assert dropped_after < LIMIT_S, f"live connection still open {dropped_after:.2f} s after the change"
    assert refused and refused_after < LIMIT_S
    # Enabled again (same secret): accepted again, through the same path.
    async with session_scope(maker) as s:
        await s.execute(update(Device).where(Device.id == "dev-a").values(enabled=True))
    result = await sync.apply(["dev-a"])
    assert result.changed == ["dev-a"] and not result.errors
    assert await can_login(port, "dev-a", SECRETS["dev-a"])


async def test_rekeyed_device_old_secret_refused_new_secret_works(
    broker: tuple[int, Path], maker: async_sessionmaker[AsyncSession]
) -> None:
    port = broker[0]
    bus = MemoryBus()
    sync = BrokerSync(maker, admin_target(port), name="sync-test")
    new_secret = "secret-b-2"
    async with following(sync, bus), device(port, "dev-b") as live:
        async with session_scope(maker) as s:
            await s.execute(
                update(Device).where(Device.id == "dev-b").values(secret_hash=hash_secret(new_secret))
            )
        start = time.monotonic()
        await bus.publish("devices", {"ids": ["dev-b"], "by": "test"})
        assert await until_disconnected(live, LIMIT_S * 2) < LIMIT_S
        assert not await can_login(port, "dev-b", SECRETS["dev-b"])
        assert time.monotonic() - start < LIMIT_S
    # The new secret is installed by whoever issued it (dynsec takes plaintext only).
    await sync.install_secret("dev-b", new_secret)
    assert await can_login(port, "dev-b", new_secret)
    assert not await can_login(port, "dev-b", SECRETS["dev-b"])
    # Nothing left to do: the broker's fingerprint matches the registry now.
    again = await sync.apply(["dev-b"])
    assert (again.changed, again.needs_secret, again.errors) == ([], [], [])


async def test_removed_device_is_deleted_and_a_new_one_installed(
    broker: tuple[int, Path], maker: async_sessionmaker[AsyncSession]
) -> None:
    port = broker[0]
    sync = BrokerSync(maker, admin_target(port), name="sync-test")
    async with device(port, "dev-a") as live:
        async with session_scope(maker) as s:
            await s.execute(delete(Device).where(Device.id == "dev-a"))
        result = await sync.apply(["dev-a"])
        assert result.changed == ["dev-a"] and not result.errors
        assert await until_disconnected(live, LIMIT_S * 2) < LIMIT_S
    assert not await can_login(port, "dev-a", SECRETS["dev-a"])
    # A device the broker has never seen (disabled when broker-config ran, enabled now):
    # the sync cannot create it without the secret and says so; installing it works.
    async with session_scope(maker) as s:
        await s.execute(update(Device).where(Device.id == "dev-off").values(enabled=True))
    assert (await sync.apply(["dev-off"])).needs_secret == ["dev-off"]
    async with session_scope(maker) as s:
        await s.execute(update(Device).where(Device.id == "dev-off").values(secret_hash=hash_secret("fresh")))
    await sync.install_secret("dev-off", "fresh")
    assert await can_login(port, "dev-off", "fresh")
    # ... pinned to its own client id, like every device.
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier="dev-b", username="dev-off", password="fresh", timeout=WAIT_S
        ):
            pass


def test_cli_config_loads_in_mosquitto_and_devices_issue_installs_each_new_secret(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`carecall broker-config` output as Mosquitto loads it; `carecall devices issue` with
    CARECALL_MQTT_ADMIN_URL makes a new device, then its new secret, work at once."""
    from typer.testing import CliRunner

    from carecall.shell.cli import app
    from dispatcher.registry.models import Home, Station

    binary = find_mosquitto()
    db = tmp_path_factory.mktemp("db") / "t.db"
    upgrade(f"sqlite:///{db}")

    async def seed() -> None:
        engine = make_engine(f"sqlite:///{db}")
        async with session_scope(make_sessionmaker(engine)) as s:
            s.add(Station(id="st-1", name="S", tier="community", kind="community_station", lat=32, lon=112))
            await s.flush()
            s.add(Home(id="home-1", station_id="st-1", address="1 Test Road", lat=32, lon=112))
        await engine.dispose()

    asyncio.run(seed())
    port = free_port()
    out_dir = Path(tempfile.mkdtemp(prefix="carecall-mosquitto-"))
    monkeypatch.setenv("CARECALL_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("CARECALL_MQTT_URL", f"mqtt://carecall-platform:plat-pw@127.0.0.1:{port}")
    monkeypatch.setenv("CARECALL_MQTT_ADMIN_URL", f"mqtt://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{port}")
    runner = CliRunner()
    first = runner.invoke(app, ["devices", "issue", "dev-a", "--home", "home-1", "--kind", "hub", "--json"])
    assert first.exit_code == 0 and "did not take" in first.output  # no broker yet: said, not fatal
    secret_a = json.loads(first.stdout.strip().splitlines()[-1])["secret"]
    result = runner.invoke(app, ["broker-config", "--out", str(out_dir), "--port", str(port)])
    assert result.exit_code == 0, result.output
    assert "1 devices" in result.output
    try:
        files = BrokerConfigFiles(
            conf=out_dir / "mosquitto.conf",
            dynsec=out_dir / "dynamic-security.json",
            persistence_dir=out_dir / "data",
            devices=1,
            privileged=0,
            skipped=0,
        )
        hand_to_broker_user(files)
        with run_mosquitto(
            binary, out_dir / "mosquitto.conf", port, tmp_path_factory.mktemp("log") / "m.log"
        ):
            assert asyncio.run(can_login(port, "dev-a", secret_a))
            issued = runner.invoke(
                app, ["devices", "issue", "dev-n", "--home", "home-1", "--kind", "hub", "--json"]
            )
            assert issued.exit_code == 0 and "did not take" not in issued.output, issued.output
            secret_n = json.loads(issued.stdout)["secret"]
            assert asyncio.run(can_login(port, "dev-n", secret_n))
            rekeyed = runner.invoke(app, ["devices", "issue", "dev-a", "--home", "home-1", "--json"])
            assert rekeyed.exit_code == 0, rekeyed.output
            secret_a2 = json.loads(rekeyed.stdout)["secret"]
            assert asyncio.run(can_login(port, "dev-a", secret_a2))
            assert not asyncio.run(can_login(port, "dev-a", secret_a))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


async def test_api_rekey_and_create_install_the_new_secret_on_mosquitto(
    broker: tuple[int, Path], maker: async_sessionmaker[AsyncSession]
) -> None:
    """The console's admin re-keys through the API, not the CLI: the secret it shows once
    must work on Mosquitto at once, the old one must not; a device created there too."""
    import httpx
    from fastapi import FastAPI

    from dispatcher.auth.models import Role
    from dispatcher.auth.tokens import TokenSigner
    from dispatcher.auth.users import create_user
    from dispatcher.registry.views import registry_router

    port = broker[0]
    from datetime import UTC, datetime

    signer = TokenSigner(b"k" * 32)
    now = datetime.now(UTC)
    async with session_scope(maker) as s:
        admin = await create_user(
            s,
            username="admin-t",
            password="pw-admin-1234",
            role=Role.admin,
            station_id=None,
            display_name="Admin",
            now=now,
        )
        token = signer.issue(admin.id, now)
    app = FastAPI()
    app.include_router(
        registry_router(
            maker,
            signer,
            MemoryBus(),
            broker_admin_url=f"mqtt://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{port}",
        )
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/api/v1/devices/dev-a/rekey", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["broker_error"] is None
        assert await can_login(port, "dev-a", body["secret"])
        assert not await can_login(port, "dev-a", SECRETS["dev-a"])
        r = await c.post(
            "/api/v1/devices", headers=headers, json={"id": "dev-new", "home_id": "home-1", "kind": "hub"}
        )
        assert r.status_code == 201, r.text
        assert r.json()["broker_error"] is None
        assert await can_login(port, "dev-new", r.json()["secret"])

"""Mosquitto files from the registry: what goes in, what stays out, and how they are written.
tests/integration/test_mosquitto_acl.py proves a real Mosquitto enforces them."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.broker_config import write_broker_config
from device_gateway.credentials import hash_secret, verify_secret
from dispatcher.db import make_engine, make_sessionmaker, session_scope
from dispatcher.migrate import upgrade
from dispatcher.models import Device, Home, Station

PLATFORM_USER = "carecall-platform"
HASHES = {d: hash_secret(f"secret-{d}") for d in ("dev-a", "dev-b", "dev-off", "gen-1", "gen-2")}


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "t.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
async def maker(template_db: Path, tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    db = tmp_path / "t.db"
    shutil.copy(template_db, db)
    engine = make_engine(f"sqlite:///{db}")
    sm = make_sessionmaker(engine)
    now = datetime.now(UTC)
    async with session_scope(sm) as s:
        s.add(Station(id="st-1", name="S", tier="community", kind="community_station", lat=32, lon=112))
        await s.flush()
        s.add(Home(id="home-1", station_id="st-1", address="1 Test Road", lat=32, lon=112))
        await s.flush()
        for device_id, secret_hash in HASHES.items():
            s.add(
                Device(
                    id=device_id,
                    home_id="home-1",
                    kind="hub",
                    enabled=device_id != "dev-off",
                    privileged=device_id.startswith("gen-"),
                    secret_hash=secret_hash,
                    created_at=now,
                )
            )
        s.add(Device(id="dev-new", home_id="home-1", kind="button", secret_hash=None, created_at=now))
    yield sm
    await engine.dispose()


async def test_passwd_holds_enabled_devices_with_secrets_and_the_platform(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    files = await write_broker_config(
        maker, tmp_path / "broker", platform_username=PLATFORM_USER, platform_password="pw-1"
    )
    assert (files.devices, files.privileged, files.skipped) == (4, 2, 1)
    entries = dict(line.split(":", 1) for line in files.passwd.read_text().splitlines())
    assert list(entries) == ["dev-a", "dev-b", "gen-1", "gen-2", PLATFORM_USER]
    for device_id in ("dev-a", "dev-b", "gen-1", "gen-2"):
        assert entries[device_id] == HASHES[device_id]  # copied, never re-hashed
    assert verify_secret("pw-1", entries[PLATFORM_USER])
    assert stat.S_IMODE(files.passwd.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.acl.stat().st_mode) == 0o600


async def test_acl_gives_devices_their_own_root_and_generators_all_uplinks(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    files = await write_broker_config(
        maker, tmp_path, platform_username=PLATFORM_USER, platform_password="pw"
    )
    rules = [ln for ln in files.acl.read_text().splitlines() if ln and not ln.startswith("#")]
    assert rules == [
        "pattern write carecall/v1/devices/%u/events",
        "pattern write carecall/v1/devices/%u/telemetry",
        "pattern write carecall/v1/devices/%u/status",
        "pattern read carecall/v1/devices/%u/ack",
        "pattern read carecall/v1/devices/%u/config",
        f"user {PLATFORM_USER}",
        "topic readwrite carecall/#",
        "user gen-1",
        "topic write carecall/v1/devices/+/events",
        "topic write carecall/v1/devices/+/telemetry",
        "topic write carecall/v1/devices/+/status",
        "user gen-2",
        "topic write carecall/v1/devices/+/events",
        "topic write carecall/v1/devices/+/telemetry",
        "topic write carecall/v1/devices/+/status",
    ]


async def test_conf_is_closed_and_persistent_inside_out_dir(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    files = await write_broker_config(
        maker,
        tmp_path,
        platform_username=PLATFORM_USER,
        platform_password="pw",
        listener_port=18830,
        bind="0.0.0.0",
    )
    lines = files.conf.read_text().splitlines()
    directives = [ln for ln in lines if ln and not ln.startswith("#")]
    assert directives[0] == "per_listener_settings false"
    for expected in (
        "listener 18830 0.0.0.0",
        "allow_anonymous false",
        f"password_file {files.passwd}",
        f"acl_file {files.acl}",
        "persistence true",
        f"persistence_location {tmp_path / 'data'}/",
        "max_queued_messages 100000",
        "set_tcp_nodelay true",
    ):
        assert expected in directives
    assert files.persistence_dir == tmp_path / "data" and files.persistence_dir.is_dir()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_rewrite_replaces_files_without_leftovers(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    out = tmp_path / "broker"
    await write_broker_config(maker, out, platform_username=PLATFORM_USER, platform_password="a")
    files = await write_broker_config(maker, out, platform_username=PLATFORM_USER, platform_password="b")
    assert names(out) == ["acl", "data", "mosquitto.conf", "passwd"]
    platform_hash = files.passwd.read_text().splitlines()[-1].split(":", 1)[1]
    assert verify_secret("b", platform_hash)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")
async def test_rewrite_keeps_the_owner_given_to_the_files(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    files = await write_broker_config(maker, tmp_path, platform_username=PLATFORM_USER, platform_password="a")
    nobody = pwd.getpwnam("nobody")
    os.chown(files.passwd, nobody.pw_uid, nobody.pw_gid)
    await write_broker_config(maker, tmp_path, platform_username=PLATFORM_USER, platform_password="b")
    assert files.passwd.stat().st_uid == nobody.pw_uid
    assert stat.S_IMODE(files.passwd.stat().st_mode) == 0o600


@pytest.mark.parametrize("username", ["", "has space", "colon:user", "line\nbreak"])
async def test_unsafe_platform_username_is_refused(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path, username: str
) -> None:
    with pytest.raises(ValueError):
        await write_broker_config(maker, tmp_path, platform_username=username, platform_password="pw")


async def test_platform_username_must_not_be_a_device(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="equals the platform username"):
        await write_broker_config(maker, tmp_path, platform_username="dev-a", platform_password="pw")
    assert not (tmp_path / "passwd").exists()

"""Mosquitto files from the registry: what goes in, what stays out, and how they are written.
tests/integration/test_mosquitto_acl.py proves a real Mosquitto enforces them."""

from __future__ import annotations

import json
import os
import pwd
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.db import session_scope
from device_gateway import broker_config
from device_gateway.broker_config import BrokerConfigFiles, fingerprint, write_broker_config
from device_gateway.credentials import hash_secret, verify_secret
from device_gateway.models import Device
from dispatcher.registry.models import Home, Station

PLATFORM_USER = "carecall-platform"
HASHES = {
    d: hash_secret(f"secret-{d}")
    for d in ("dev-a", "dev-b", "dev-off", "gen-1", "gen-2", "carecall-gateway-1")
}
# Mosquitto 2.0's dynsec keeps 12-byte salts only; a 16-byte one cannot be carried over.
HASHES["dev-salt16"] = hash_secret("secret-salt16", salt=b"0123456789abcdef")
ADMIN_USER = "carecall-broker-admin"
PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


@pytest.fixture
async def maker(maker: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """The shared per-test database (tests/conftest.py, --db), seeded."""
    sm = maker
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
    return sm


async def write(
    maker: async_sessionmaker[AsyncSession], out: Path, *, password: str = "pw", **kw: object
) -> BrokerConfigFiles:
    return await write_broker_config(
        maker,
        out,
        platform_username=kw.pop("platform_username", PLATFORM_USER),  # type: ignore[arg-type]
        platform_password=password,
        admin_username=ADMIN_USER,
        admin_password="admin-" + password,
        plugin_path=PLUGIN,
        **kw,  # type: ignore[arg-type]
    )


def state(files: BrokerConfigFiles) -> Any:
    data = json.loads(files.dynsec.read_text())
    assert isinstance(data, dict)
    return data


def as_hash(client: dict[str, object]) -> str:
    return f"$7${client['iterations']}${client['salt']}${client['password']}"


async def test_dynsec_holds_enabled_devices_with_secrets_and_the_two_accounts(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    files = await write(maker, tmp_path / "broker", password="pw-1")
    # left out: dev-off (disabled), dev-new (no secret), carecall-gateway-1 (reserved
    # prefix: pinned to that client id it could take the gateway's session), dev-salt16
    assert (files.devices, files.privileged, files.skipped) == (4, 2, 3)
    clients = {c["username"]: c for c in state(files)["clients"]}
    assert list(clients) == ["dev-a", "dev-b", "gen-1", "gen-2", PLATFORM_USER, ADMIN_USER]
    for device_id in ("dev-a", "dev-b", "gen-1", "gen-2"):
        assert as_hash(clients[device_id]) == HASHES[device_id]  # carried over, never re-hashed
        assert clients[device_id]["textdescription"] == fingerprint(HASHES[device_id])
    # A device must connect with its own id; load generators open many connections.
    assert clients["dev-a"]["clientid"] == "dev-a" and clients["dev-b"]["clientid"] == "dev-b"
    assert "clientid" not in clients["gen-1"] and "clientid" not in clients[PLATFORM_USER]
    assert verify_secret("pw-1", as_hash(clients[PLATFORM_USER]))
    assert verify_secret("admin-pw-1", as_hash(clients[ADMIN_USER]))
    assert stat.S_IMODE(files.dynsec.stat().st_mode) == 0o600


async def test_roles_confine_each_device_to_its_own_topics(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    data = state(await write(maker, tmp_path))
    assert data["defaultACLAccess"] == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": True,
    }
    roles = {
        r["rolename"]: [(a["acltype"], a["topic"], a["allow"]) for a in r["acls"]] for r in data["roles"]
    }
    clients = {c["username"]: c["roles"] for c in data["clients"]}
    assert clients["dev-a"] == [{"rolename": "device:dev-a"}]
    assert roles["device:dev-a"] == [
        ("publishClientSend", "carecall/v1/devices/dev-a/events", True),
        ("publishClientSend", "carecall/v1/devices/dev-a/telemetry", True),
        ("publishClientSend", "carecall/v1/devices/dev-a/status", True),
        ("subscribeLiteral", "carecall/v1/devices/dev-a/ack", True),
        ("publishClientReceive", "carecall/v1/devices/dev-a/ack", True),
        ("subscribeLiteral", "carecall/v1/devices/dev-a/config", True),
        ("publishClientReceive", "carecall/v1/devices/dev-a/config", True),
    ]
    assert clients["gen-1"] == clients["gen-2"] == [{"rolename": "loadgen"}]
    assert roles["loadgen"] == [
        ("publishClientSend", "carecall/v1/devices/+/events", True),
        ("publishClientSend", "carecall/v1/devices/+/telemetry", True),
        ("publishClientSend", "carecall/v1/devices/+/status", True),
    ]
    assert clients[PLATFORM_USER] == [{"rolename": "platform"}]
    assert ("subscribePattern", "$share/+/carecall/#", True) in roles["platform"]
    assert clients[ADMIN_USER] == [{"rolename": "admin"}]
    assert {t for _a, t, _ in roles["admin"]} == {"$CONTROL/dynamic-security/#"}
    assert "device:gen-1" not in roles and "device:dev-off" not in roles


async def test_conf_is_closed_and_persistent_inside_out_dir(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    files = await write(maker, tmp_path, listener_port=18830, bind="0.0.0.0")
    lines = files.conf.read_text().splitlines()
    directives = [ln for ln in lines if ln and not ln.startswith("#")]
    assert directives[0] == "per_listener_settings false"
    for expected in (
        "listener 18830 0.0.0.0",
        "allow_anonymous false",
        f"plugin {PLUGIN}",
        f"plugin_opt_config_file {files.dynsec}",
        "persistence true",
        f"persistence_location {tmp_path / 'data'}/",
        "max_queued_messages 100000",
        "set_tcp_nodelay true",
    ):
        assert expected in directives
    assert not any(d.startswith(("password_file", "acl_file")) for d in directives)
    assert files.persistence_dir == tmp_path / "data" and files.persistence_dir.is_dir()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_rewrite_replaces_files_without_leftovers(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    out = tmp_path / "broker"
    await write(maker, out, password="a")
    files = await write(maker, out, password="b")
    assert names(out) == ["data", "dynamic-security.json", "mosquitto.conf"]
    platform = next(c for c in state(files)["clients"] if c["username"] == PLATFORM_USER)
    assert verify_secret("b", as_hash(platform))


@pytest.mark.skipif(os.geteuid() != 0, reason="changing file owners needs root")
async def test_rewrite_keeps_the_owner_given_to_the_files(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    files = await write(maker, tmp_path, password="a")
    nobody = pwd.getpwnam("nobody")
    os.chown(files.dynsec, nobody.pw_uid, nobody.pw_gid)
    await write(maker, tmp_path, password="b")
    assert files.dynsec.stat().st_uid == nobody.pw_uid
    assert stat.S_IMODE(files.dynsec.stat().st_mode) == 0o600


@pytest.mark.parametrize("username", ["", "has space", "colon:user", "line\nbreak", ADMIN_USER])
async def test_unsafe_platform_username_is_refused(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path, username: str
) -> None:
    with pytest.raises(ValueError):
        await write(maker, tmp_path, platform_username=username)


async def test_platform_username_must_not_be_a_device(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="equals a platform account name"):
        await write(maker, tmp_path, platform_username="dev-a")
    assert not (tmp_path / "dynamic-security.json").exists()


async def test_missing_plugin_is_a_clear_error(
    maker: async_sessionmaker[AsyncSession], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_config, "DYNSEC_PLUGIN_PATHS", (str(tmp_path / "nowhere.so"),))
    with pytest.raises(ValueError, match=r"mosquitto_dynamic_security\.so not found"):
        await write_broker_config(
            maker, tmp_path, platform_username=PLATFORM_USER, platform_password="pw", admin_password="apw"
        )

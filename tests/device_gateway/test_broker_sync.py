"""The broker sync's decisions (pure): what Mosquitto's dynsec must be told so that it
accepts exactly what the registry accepts. tests/integration/test_broker_sync_mosquitto.py
runs them against a real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from device_gateway.broker_config import dynsec_password
from device_gateway.broker_sync import (
    BrokerClient,
    RegistryDevice,
    fingerprint,
    install_commands,
    plan,
)
from device_gateway.credentials import hash_secret

H1 = hash_secret("one")
H2 = hash_secret("two")


def enabled(h: str | None = H1, privileged: bool = False) -> RegistryDevice:
    return RegistryDevice(enabled=True, secret_hash=h, privileged=privileged)


def on_broker(h: str = H1, disabled: bool = False) -> BrokerClient:
    return BrokerClient(disabled=disabled, fingerprint=fingerprint(h))


def commands(p: object) -> list[str]:
    return [c["command"] for c in p.commands]  # type: ignore[attr-defined]


def test_in_line_needs_nothing() -> None:
    p = plan("d1", enabled(), on_broker())
    assert (commands(p), p.needs_secret) == ([], False)


def test_disabled_or_secretless_device_is_disabled_once() -> None:
    off = RegistryDevice(enabled=False, secret_hash=H1, privileged=False)
    assert commands(plan("d1", off, on_broker())) == ["disableClient"]
    assert commands(plan("d1", off, on_broker(disabled=True))) == []
    assert commands(plan("d1", enabled(None), on_broker())) == ["disableClient"]
    assert commands(plan("d1", off, None)) == []


def test_removed_device_is_deleted_with_its_role() -> None:
    p = plan("d1", None, on_broker())
    assert p.commands == [
        {"command": "deleteClient", "username": "d1"},
        {"command": "deleteRole", "rolename": "device:d1"},
    ]
    assert commands(plan("d1", None, None)) == []


def test_rekeyed_device_loses_its_old_secret_and_waits_for_the_new_one() -> None:
    p = plan("d1", enabled(H2), on_broker(H1))
    assert (commands(p), p.needs_secret) == (["disableClient"], True)
    p = plan("d1", enabled(H2), on_broker(H1, disabled=True))
    assert (commands(p), p.needs_secret) == ([], True)


def test_enabled_again_with_the_secret_the_broker_holds() -> None:
    assert commands(plan("d1", enabled(), on_broker(disabled=True))) == ["enableClient"]


def test_unknown_to_the_broker_needs_the_secret() -> None:
    p = plan("d1", enabled(), None)
    assert (commands(p), p.needs_secret) == ([], True)


def test_reserved_ids_are_never_touched() -> None:
    assert commands(plan("carecall-gateway-1", None, on_broker())) == []


def test_install_on_a_new_device_creates_role_then_pinned_client() -> None:
    cmds = install_commands("d1", "plain", H1, privileged=False, exists=False)
    assert [c["command"] for c in cmds] == ["createRole", "createClient"]
    assert cmds[0]["rolename"] == "device:d1"
    assert cmds[1]["clientid"] == "d1" and cmds[1]["password"] == "plain"
    assert cmds[1]["textdescription"] == fingerprint(H1)
    gen = install_commands("g1", "plain", H1, privileged=True, exists=False)
    assert [c["command"] for c in gen] == ["createClient"] and "clientid" not in gen[0]
    again = install_commands("d1", "plain", H2, privileged=False, exists=True)
    assert [c["command"] for c in again] == ["setClientPassword", "modifyClient", "enableClient"]
    assert again[1]["textdescription"] == fingerprint(H2)


def test_registry_hashes_convert_to_dynsec_fields_without_the_secret() -> None:
    fields = dynsec_password(H1)
    assert fields is not None
    assert f"$7${fields['iterations']}${fields['salt']}${fields['password']}" == H1
    assert dynsec_password(hash_secret("x", salt=b"0123456789abcdef")) is None  # dynsec: 12-byte salts
    assert dynsec_password("$6$abc$def") is None
    assert dynsec_password("$7$1000$!!$??") is None
    assert fingerprint(H1) != fingerprint(H2) and H1 not in fingerprint(H1)


async def test_gateway_runs_the_sync_only_when_configured_and_survives_a_dead_broker(tmp_path: Path) -> None:
    from carecall.shell.runtime import broker_sync_task, open_core
    from config.settings import load_settings

    url = f"sqlite:///{tmp_path / 't.db'}"
    core = await open_core(load_settings(database_url=url))
    try:
        assert broker_sync_task(core, core.settings) is None
        configured = load_settings(database_url=url, mqtt_admin_url="mqtt://admin:pw@127.0.0.1:1")
        task = broker_sync_task(core, configured)
        assert task is not None
        try:
            async with asyncio.timeout(5):
                while not core.bus._subs.get("devices"):  # type: ignore[union-attr]
                    await asyncio.sleep(0.01)
            await core.bus.publish("devices", {"ids": ["dev-a"], "by": "test"})  # broker down: logged
            await asyncio.sleep(0.5)
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await core.close()


async def test_follow_stops_when_a_cancel_arrives_with_the_broker_reply() -> None:
    """Python 3.11's asyncio.wait_for (inside aiomqtt) returns a reply that lands together
    with a cancellation and drops the cancellation. ``follow`` then went back to the bus
    and waited there for ever: the integration test's shutdown hung 1 run in 3."""
    from carecall.core.bus import MemoryBus
    from device_gateway.broker_sync import BrokerSync, SyncResult

    class SwallowingSync(BrokerSync):
        def __init__(self) -> None:
            self.applying = asyncio.Event()

        async def reconcile_disabled(self) -> SyncResult:
            return SyncResult()

        async def apply(self, ids: object) -> SyncResult:
            self.applying.set()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                pass  # what wait_for does when the reply is already there
            return SyncResult(changed=["dev-b"])

    bus = MemoryBus()
    sync = SwallowingSync()
    task = asyncio.create_task(sync.follow(bus))
    while not bus._subs.get("devices"):
        await asyncio.sleep(0.001)
    await bus.publish("devices", {"ids": ["dev-b"], "by": "test"})
    await asyncio.wait_for(sync.applying.wait(), 2)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert task in done and task.cancelled()

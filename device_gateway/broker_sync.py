"""Registry changes reach a live Mosquitto at once (issue 10 item 6).

The registry publishes ``{"ids": [...], "by": actor}`` on the bus channel ``devices``
after it commits a change to a device's enabled flag, secret or existence. This task
(run by ``carecall gateway`` when ``CARECALL_MQTT_ADMIN_URL`` names the dynamic-security
admin account written by ``broker-config``) reads those devices from the registry, asks
the broker what it holds for them (``getClient``, read only) and sends what differs over
``$CONTROL/dynamic-security/v1``:

* removed from the registry → ``deleteClient`` (+ its role): connection closed, login refused;
* disabled, or no secret → ``disableClient``: connection closed, login refused;
* re-keyed (the fingerprint of the registry hash differs from the one the broker holds) →
  ``disableClient``: the old secret stops working at once. dynsec's control API accepts
  plaintext passwords only, so the new secret is installed by whoever holds it:
  ``install_secret`` (called by ``carecall devices issue``) sets it and enables the client;
* enabled again with the secret the broker holds → ``enableClient``.

Deciding is a pure function (``plan``); this module's I/O is one short admin connection per
batch. Several gateway copies may each run it: every command is idempotent, and reading
the broker first keeps a second copy from repeating a change (each change makes dynsec
rewrite its whole file, see ``broker_config``). The bus is a hint: a message lost while
Redis is down is not replayed, so ``reconcile_disabled`` also runs at start.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import aiomqtt
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.cancel import raise_if_cancelling
from device_gateway.broker_config import (
    RESERVED_PREFIX,
    device_client,
    device_role,
    device_role_name,
    dynsec_password,
    fingerprint,
)
from device_gateway.changes import DEVICES_CHANNEL, announced_by, announced_ids
from device_gateway.models import Device

if TYPE_CHECKING:
    from carecall.core.bus import MemoryBus, RedisBus
    from device_gateway.mqtt import MqttTarget

log = structlog.get_logger("carecall.broker_sync")

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = f"{CONTROL_TOPIC}/response"
_COMMANDS_PER_REQUEST: Final = 100
_REPLY_TIMEOUT_S: Final = 10.0
_MAX_ROUNDS: Final = 3


@dataclass(frozen=True, slots=True)
class RegistryDevice:
    enabled: bool
    secret_hash: str | None
    privileged: bool


@dataclass(frozen=True, slots=True)
class BrokerClient:
    disabled: bool
    fingerprint: str | None


@dataclass(slots=True)
class Plan:
    commands: list[dict[str, Any]] = field(default_factory=list)
    needs_secret: bool = False  # the broker must get a secret it can only get in plaintext


def plan(device_id: str, registry: RegistryDevice | None, broker: BrokerClient | None) -> Plan:
    """What the broker must be told so that it accepts exactly what the registry accepts."""
    if device_id.startswith(RESERVED_PREFIX):
        return Plan()  # never a device account (broker_config leaves such ids out)
    if registry is None:
        if broker is None:
            return Plan()
        return Plan(
            [
                {"command": "deleteClient", "username": device_id},
                {"command": "deleteRole", "rolename": device_role_name(device_id)},
            ]
        )
    usable = registry.enabled and bool(registry.secret_hash) and dynsec_password(registry.secret_hash or "")
    if not usable:
        if broker is not None and not broker.disabled:
            return Plan([{"command": "disableClient", "username": device_id}])
        return Plan()
    assert registry.secret_hash is not None
    if broker is None:
        return Plan(needs_secret=True)
    if broker.fingerprint != fingerprint(registry.secret_hash):
        cmds = [] if broker.disabled else [{"command": "disableClient", "username": device_id}]
        return Plan(cmds, needs_secret=True)
    if broker.disabled:
        return Plan([{"command": "enableClient", "username": device_id}])
    return Plan()


def install_commands(
    device_id: str, secret: str, secret_hash: str, *, privileged: bool, exists: bool
) -> list[dict[str, Any]]:
    """Commands that make the broker accept ``secret`` (and only it) for ``device_id``."""
    fp = fingerprint(secret_hash)
    if exists:
        return [
            {"command": "setClientPassword", "username": device_id, "password": secret},
            {"command": "modifyClient", "username": device_id, "textdescription": fp},
            {"command": "enableClient", "username": device_id},
        ]
    fields = dynsec_password(secret_hash) or {}
    client = device_client(device_id, fields, privileged=privileged, fingerprint=fp)
    create: dict[str, Any] = {
        "command": "createClient",
        "username": device_id,
        "password": secret,
        "textdescription": fp,
        "roles": client["roles"],
    }
    if "clientid" in client:
        create["clientid"] = client["clientid"]
    cmds: list[dict[str, Any]] = []
    if not privileged:
        role = device_role(device_id)
        cmds.append({"command": "createRole", "rolename": role["rolename"], "acls": role["acls"]})
    cmds.append(create)
    return cmds


def _broker_client(response: dict[str, Any]) -> BrokerClient | None:
    if "error" in response:
        return None  # "Client not found"
    data = response.get("data")
    client = data.get("client") if isinstance(data, dict) else None
    if not isinstance(client, dict):
        return None
    fp = client.get("textdescription")
    return BrokerClient(
        disabled=bool(client.get("disabled", False)), fingerprint=fp if isinstance(fp, str) else None
    )


class DynsecControl:
    """Sends command batches to ``$CONTROL/dynamic-security/v1`` as the admin account."""

    def __init__(self, target: MqttTarget, *, name: str) -> None:
        self.target = target
        self.name = name

    async def run(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One response per command, in order. Raises aiomqtt.MqttError or TimeoutError."""
        if not commands:
            return []
        client = aiomqtt.Client(
            self.target.host,
            self.target.port,
            username=self.target.username,
            password=self.target.password,
            identifier=f"carecall-{self.name}-{secrets.token_hex(4)}",
            clean_session=True,
            protocol=aiomqtt.ProtocolVersion.V311,
            timeout=_REPLY_TIMEOUT_S,
            tls_context=ssl.create_default_context() if self.target.tls else None,
        )
        out: list[dict[str, Any]] = []
        async with client:
            await client.subscribe(RESPONSE_TOPIC, qos=1)
            for start in range(0, len(commands), _COMMANDS_PER_REQUEST):
                chunk = list(commands[start : start + _COMMANDS_PER_REQUEST])
                tag = secrets.token_hex(8)
                tagged = [{**c, "correlationData": f"{tag}-{i}"} for i, c in enumerate(chunk)]
                await client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
                out.extend(await self._replies(client, tag, len(chunk)))
        return out

    @staticmethod
    async def _replies(client: aiomqtt.Client, tag: str, n: int) -> list[dict[str, Any]]:
        got: dict[int, dict[str, Any]] = {}
        async with asyncio.timeout(_REPLY_TIMEOUT_S):
            async for msg in client.messages:
                try:
                    body = json.loads(bytes(msg.payload))
                except (TypeError, ValueError):
                    continue
                responses = body.get("responses") if isinstance(body, dict) else None
                for r in responses if isinstance(responses, list) else ():
                    corr = r.get("correlationData") if isinstance(r, dict) else None
                    if isinstance(corr, str) and corr.startswith(f"{tag}-"):
                        got[int(corr.rsplit("-", 1)[1])] = r
                if len(got) == n:
                    break
        return [got[i] for i in range(n)]


@dataclass(slots=True)
class SyncResult:
    changed: list[str] = field(default_factory=list)
    needs_secret: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class BrokerSync:
    def __init__(
        self, maker: async_sessionmaker[AsyncSession], target: MqttTarget, *, name: str = "broker-sync"
    ) -> None:
        self._maker = maker
        self.control = DynsecControl(target, name=name)
        self._lock = asyncio.Lock()

    async def _registry(self, ids: Iterable[str]) -> dict[str, RegistryDevice]:
        async with self._maker() as session:
            rows = (
                await session.execute(
                    select(Device.id, Device.enabled, Device.secret_hash, Device.privileged).where(
                        Device.id.in_(list(ids))
                    )
                )
            ).all()
        return {r.id: RegistryDevice(bool(r.enabled), r.secret_hash, bool(r.privileged)) for r in rows}

    async def apply(self, ids: Sequence[str]) -> SyncResult:
        """Bring the broker in line with the registry for ``ids``. Reads both again after
        each round, so a change racing with this one (a secret installed meanwhile) is
        not undone."""
        result = SyncResult()
        async with self._lock:
            for _ in range(_MAX_ROUNDS):
                registry = await self._registry(ids)
                replies = await self.control.run([{"command": "getClient", "username": i} for i in ids])
                plans = {
                    i: plan(i, registry.get(i), _broker_client(r)) for i, r in zip(ids, replies, strict=True)
                }
                result.needs_secret = [i for i, p in plans.items() if p.needs_secret]
                todo = [(i, c) for i, p in plans.items() for c in p.commands]
                if not todo:
                    break
                answers = await self.control.run([c for _i, c in todo])
                for (device_id, cmd), answer in zip(todo, answers, strict=True):
                    if "error" in answer and cmd["command"] != "deleteRole":
                        result.errors.append(f"{device_id}: {cmd['command']}: {answer['error']}")
                    elif device_id not in result.changed:
                        result.changed.append(device_id)
        return result

    async def install_secret(self, device_id: str, secret: str) -> None:
        """Make the broker accept the secret just issued for ``device_id`` (only it)."""
        async with self._lock:
            reg = (await self._registry([device_id])).get(device_id)
            if reg is None or not reg.secret_hash or dynsec_password(reg.secret_hash) is None:
                raise ValueError(f"device {device_id!r} has no usable secret in the registry")
            if device_id.startswith(RESERVED_PREFIX):
                raise ValueError(
                    f"device ids starting with {RESERVED_PREFIX!r} are reserved for the platform"
                )
            (reply,) = await self.control.run([{"command": "getClient", "username": device_id}])
            cmds = install_commands(
                device_id,
                secret,
                reg.secret_hash,
                privileged=reg.privileged,
                exists=_broker_client(reply) is not None,
            )
            if not reg.enabled:
                cmds = [c for c in cmds if c["command"] != "enableClient"] + [
                    {"command": "disableClient", "username": device_id}
                ]
            for cmd, answer in zip(cmds, await self.control.run(cmds), strict=True):
                if "error" in answer:
                    raise RuntimeError(f"broker refused {cmd['command']} for {device_id}: {answer['error']}")

    async def reconcile_disabled(self) -> SyncResult:
        """Disable on the broker every device the registry has disabled (few, normally)."""
        async with self._maker() as session:
            ids = list(
                (
                    await session.execute(
                        select(Device.id).where(Device.enabled.is_(False)).order_by(Device.id)
                    )
                ).scalars()
            )
        result = SyncResult()
        for start in range(0, len(ids), 1000):
            part = await self.apply(ids[start : start + 1000])
            result.changed += part.changed
            result.errors += part.errors
        return result

    async def follow(self, bus: MemoryBus | RedisBus) -> None:
        """Apply every ``devices`` message until cancelled; bad messages and broker
        trouble are logged, never fatal."""
        try:
            done = await self.reconcile_disabled()
            log.info("broker_sync.started", reconciled=len(done.changed), errors=done.errors[:5])
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            log.warning("broker_sync.reconcile_failed", error=str(exc))
        raise_if_cancelling()
        async for message in bus.subscribe(DEVICES_CHANNEL):
            ids = announced_ids(message)
            if not ids:
                continue
            try:
                res = await self.apply(ids)
            except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
                log.warning("broker_sync.failed", devices=len(ids), error=str(exc))
                continue
            except Exception:
                log.exception("broker_sync.failed", devices=len(ids))
                continue
            finally:
                raise_if_cancelling()  # aiomqtt may have returned instead of stopping
            log.info(
                "broker_sync.applied",
                changed=res.changed[:20],
                needs_secret=res.needs_secret[:20],
                errors=res.errors[:5],
                by=announced_by(message),
            )


async def install_issued_secret(
    maker: async_sessionmaker[AsyncSession], admin_url: str | None, device_id: str, secret: str
) -> str | None:
    """Push a just-issued secret to Mosquitto (dynsec takes plaintext only, so whoever
    issues a secret must install it): the CLI's ``devices issue`` and the registry API's
    create and re-key both call this. None when installed or when no broker admin URL is
    configured (the embedded broker reads the registry itself); else the error, to show."""
    if not admin_url:
        return None
    from device_gateway.mqtt import MqttTarget

    sync = BrokerSync(maker, MqttTarget.from_url(admin_url), name=f"issue-{device_id}"[:64])
    try:
        await sync.install_secret(device_id, secret)
    except (aiomqtt.MqttError, TimeoutError, OSError, RuntimeError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None

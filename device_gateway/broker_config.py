"""Mosquitto 2.0 configuration generated from the device registry (``carecall broker-config``).

Production runs Mosquitto; it has to enforce the same device contract as the embedded
broker (docs/protocol.md "Who is on the line") without calling back into CareCall on every connect, and
no device may be able to make another's alarm disappear (issue 10). Mosquitto's
dynamic-security plugin (``mosquitto_dynamic_security.so``) is the only part of 2.0.11 that
can do that, so the registry is turned into its JSON state plus a ``mosquitto.conf``.

What Mosquitto 2.0.11 checks, measured on this machine (integration tests in
tests/integration/test_mosquitto_acl.py and test_broker_sync_mosquitto.py):

* The file ACL (``acl_file``) never checks a SUBSCRIBE; it checks each delivery. A device
  that subscribes to ``$share/carecall-gateway/carecall/v1/devices/+/events`` joins the
  gateways' group, is handed every n-th event and the broker drops it (10 of 20 SOS lost
  with one such connection). Splitting listeners (``per_listener_settings`` with
  ``use_username_as_clientid`` on the device listener) stops client-id takeover but not
  this: shared groups are broker-wide. Loading dynsec next to ``password_file`` does not
  help either: dynsec defers on users it does not know, so their subscriptions go
  unchecked again.
* dynsec checks every SUBSCRIBE against the client's roles (``subscribeLiteral`` /
  ``subscribePattern``, default deny), the full ``$share/<group>/...`` string included, so
  a device can subscribe to nothing but its own ``ack`` and ``config``. A client with a
  fixed ``clientid`` must connect with exactly that id, so a device can take over neither
  another device's session nor a gateway's (``carecall-gateway-<instance>``); a refused
  CONNECT kicks nobody. ``disableClient`` / ``deleteClient`` over
  ``$CONTROL/dynamic-security/v1`` close the live connection at once (measured: 4-25 ms)
  and refuse the next CONNECT.
* 2.0.11 substitutes neither ``%u`` nor ``%c`` in dynsec ACLs, so each device gets a role
  of its own (``device:<id>``). One role shared by many clients is no way out: loading it
  is quadratic (10,000 clients 3.3 s, 20,000 clients 17 s).
* The registry's ``$7$`` PBKDF2-SHA512 hashes convert to dynsec's
  ``password``/``salt``/``iterations`` fields as they are (base64 digest, base64 12-byte
  salt, iteration count): no secret is needed here.
* dynsec reads its file only at start (SIGHUP does not reload it) and rewrites the whole
  file after every change made over ``$CONTROL``. Its control API takes plaintext
  passwords only. So a disable, an enable or a removal reaches the live broker through
  ``broker_sync`` (admin account below) within milliseconds, while a *new* secret can only
  be installed by whoever holds it: ``carecall devices issue`` pushes it when
  ``CARECALL_MQTT_ADMIN_URL`` is set; otherwise the broker keeps refusing the device (its
  old secret is disabled at once) until broker-config is rerun with the broker stopped.

Cost at 100,000 devices (measured with this generator, Mosquitto 2.0.11, 2-core VM):
writing takes 10-16 s and 99 MB (the broker rewrites it as 138 MB); Mosquitto needs 8.6 s
to start listening and holds 949 MB resident. Every change over ``$CONTROL`` makes the
broker rewrite the whole file on its only thread: about 7 s in which it serves nobody (an
SOS sent meanwhile reached the platform after 6.8 s), 0.1-0.25 s at 10,000-20,000
devices; the kick itself comes first (58 ms). A change of n devices costs n rewrites.
docs/operations.md says what that means for operators.

Accounts: every enabled device with a secret (client id pinned to its id; privileged load
generators are not pinned and get one shared ``loadgen`` role: they open many connections
with generated ids); the platform account (gateway, dispatcher, API, all copies: its client
ids are not pinned, devices cannot use them any more); and the admin account that
``broker_sync`` uses, allowed nothing but ``$CONTROL/dynamic-security/#``. Device ids that
start with ``carecall-`` are left out: a device pinned to ``carecall-gateway-1`` could take
the gateway's session.

This file is the broker's state from then on: rerun broker-config only while Mosquitto is
stopped (the running broker would overwrite it with its own state on its next change).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.credentials import hash_secret
from device_gateway.models import Device
from device_gateway.protocol import DEVICE_ID_RE, TOPIC_PREFIX, UPLINK, Channel

log = logging.getLogger(__name__)

# Mosquitto's config file splits at whitespace; an account name is also a JSON key of ours.
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASH_RE = re.compile(r"^\$7\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")
_UPLINK_ORDER = (Channel.events, Channel.telemetry, Channel.status)
_DOWNLINK_ORDER = (Channel.ack, Channel.config)
assert frozenset(_UPLINK_ORDER) == UPLINK

# dynsec keeps a 64-byte PBKDF2-SHA512 digest and a 12-byte salt; other lengths are refused.
_DYNSEC_SALT_BYTES = 12
_DYNSEC_HASH_BYTES = 64
# Platform client ids are ``carecall-<part>-<instance>``: no device may be pinned to one.
RESERVED_PREFIX = "carecall-"

DYNSEC_NAME = "dynamic-security.json"
CONF_NAME = "mosquitto.conf"
PERSISTENCE_NAME = "data"
PLATFORM_ROLE = "platform"
ADMIN_ROLE = "admin"
LOADGEN_ROLE = "loadgen"
DEFAULT_ADMIN_USER = "carecall-broker-admin"
DYNSEC_PLUGIN_PATHS = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


@dataclass(frozen=True, slots=True)
class BrokerConfigFiles:
    """What was written, with counts so the CLI can say what the broker will accept."""

    conf: Path
    dynsec: Path
    persistence_dir: Path
    devices: int  # device clients in the dynsec file
    privileged: int  # of those, load generators (shared ``loadgen`` role, id not pinned)
    skipped: int  # enabled devices left out (no secret issued, or unusable id/hash)
    # those devices by id, each with why, in id order (the CLI names them)
    left_out: tuple[tuple[str, str], ...] = ()



# Settings of every Mosquitto CareCall deploys (also the bench's own broker,
# carecall/shell/bench_broker.py): queued QoS 1 messages for an offline gateway session
# (events must survive a gateway restart during a burst: the default of 1000 is far too
# low), and no Nagle delay on the broker's small writes (an ack held back for the TCP
# acknowledgement of the packet before it: ~23 ms of the median alarm ack on this machine).
DEPLOYED_SETTINGS: tuple[str, ...] = ("max_queued_messages 100000", "set_tcp_nodelay true")

def fingerprint(secret_hash: str) -> str:
    """A short, one-way tag of a registry hash; tells the broker's copy from a newer one
    (written into the broker's state, compared by broker_sync)."""
    return hashlib.sha256(secret_hash.encode("utf-8")).hexdigest()[:32]


def find_dynsec_plugin() -> str | None:
    return next((p for p in DYNSEC_PLUGIN_PATHS if os.path.isfile(p)), None)


def dynsec_password(secret_hash: str) -> dict[str, Any] | None:
    """A registry ``$7$`` hash as dynsec's password fields, or None if dynsec cannot use it."""
    if not _HASH_RE.match(secret_hash):
        return None
    _, _, iterations, salt_b64, hash_b64 = secret_hash.split("$")
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        digest = base64.b64decode(hash_b64, validate=True)
        rounds = int(iterations)
    except ValueError:
        return None
    if len(salt) != _DYNSEC_SALT_BYTES or len(digest) != _DYNSEC_HASH_BYTES or not 1 <= rounds < 2**31:
        return None
    return {"password": hash_b64, "salt": salt_b64, "iterations": rounds}


def device_role_name(device_id: str) -> str:
    return f"device:{device_id}"


def device_role(device_id: str) -> dict[str, Any]:
    """One device's rules: publish its own uplink, subscribe to and receive its own downlink,
    literally (no wildcard, no ``$share``), nothing else."""
    acls: list[dict[str, Any]] = [
        {"acltype": "publishClientSend", "topic": f"{TOPIC_PREFIX}/{device_id}/{ch.value}", "allow": True}
        for ch in _UPLINK_ORDER
    ]
    for ch in _DOWNLINK_ORDER:
        acls.append(
            {"acltype": "subscribeLiteral", "topic": f"{TOPIC_PREFIX}/{device_id}/{ch.value}", "allow": True}
        )
        acls.append(
            {
                "acltype": "publishClientReceive",
                "topic": f"{TOPIC_PREFIX}/{device_id}/{ch.value}",
                "allow": True,
            }
        )
    return {"rolename": device_role_name(device_id), "acls": acls}


def device_client(
    device_id: str, password: dict[str, Any], *, privileged: bool, fingerprint: str
) -> dict[str, Any]:
    """``textdescription`` carries a fingerprint of the registry hash (a hash of the hash,
    useless for guessing): ``broker_sync`` compares it to spot a re-keyed device."""
    client: dict[str, Any] = {"username": device_id, "textdescription": fingerprint, **password}
    if privileged:
        client["roles"] = [{"rolename": LOADGEN_ROLE}]
    else:
        client["clientid"] = device_id
        client["roles"] = [{"rolename": device_role_name(device_id)}]
    return client


def _static_roles() -> list[dict[str, Any]]:
    def allow(acltype: str, topic: str) -> dict[str, Any]:
        return {"acltype": acltype, "topic": topic, "allow": True}

    platform = [
        allow("publishClientSend", "carecall/#"),
        allow("publishClientReceive", "carecall/#"),
        allow("subscribePattern", "carecall/#"),
        # dynsec sees a shared subscription with its prefix: the gateways' groups.
        allow("subscribePattern", "$share/+/carecall/#"),
    ]
    loadgen = [allow("publishClientSend", f"{TOPIC_PREFIX}/+/{ch.value}") for ch in _UPLINK_ORDER]
    control = "$CONTROL/dynamic-security/#"
    admin = [
        allow("publishClientSend", control),
        allow("publishClientReceive", control),
        allow("subscribePattern", control),
    ]
    return [
        {"rolename": PLATFORM_ROLE, "acls": platform},
        {"rolename": LOADGEN_ROLE, "acls": loadgen},
        {"rolename": ADMIN_ROLE, "acls": admin},
    ]


def _left_out_reason(device_id: str, secret_hash: str | None, password: dict[str, Any] | None) -> str | None:
    """Why an enabled device cannot be a broker client, or None when it can."""
    if not secret_hash:
        return "no secret issued yet (carecall devices issue --all-new)"
    if not DEVICE_ID_RE.match(device_id):
        return "id not usable as an MQTT client id"
    if device_id.startswith(RESERVED_PREFIX):
        return f"id starts with the reserved prefix {RESERVED_PREFIX!r}"
    if password is None:
        return "stored secret hash is not one Mosquitto reads; re-key the device"
    return None


def _check_line_safe(name: str, value: str) -> None:
    if any(c.isspace() for c in value):
        raise ValueError(f"{name} must not contain spaces or line breaks: {value!r}")


async def write_broker_config(
    maker: async_sessionmaker[AsyncSession],
    out_dir: Path,
    *,
    platform_username: str,
    platform_password: str,
    admin_username: str = DEFAULT_ADMIN_USER,
    admin_password: str,
    listener_port: int = 1883,
    bind: str = "127.0.0.1",
    plugin_path: str | None = None,
) -> BrokerConfigFiles:
    """Write ``dynamic-security.json`` and ``mosquitto.conf`` into ``out_dir``.

    Each file is replaced atomically. ``dynamic-security.json`` is mode 0600: the hashes
    are only as strong as the file's secrecy, and it lists every device id. Both must be
    readable (the JSON also writable) by the user Mosquitto runs as.
    """
    for what, name in (("platform", platform_username), ("admin", admin_username)):
        if not _ACCOUNT_RE.match(name):
            raise ValueError(f"bad {what} username {name!r} (letters, digits, _ . @ -)")
    if platform_username == admin_username:
        raise ValueError("the platform and the admin account need different usernames")
    if not platform_password or not admin_password:
        raise ValueError("the platform and the admin account need a password")
    if not 1 <= listener_port <= 65535:
        raise ValueError(f"bad listener port {listener_port}")
    _check_line_safe("bind", bind)
    plugin = plugin_path or find_dynsec_plugin()
    if not plugin:
        raise ValueError("mosquitto_dynamic_security.so not found; give its path (Mosquitto 2.0 ships it)")
    _check_line_safe("plugin path", plugin)
    out_dir = Path(await asyncio.to_thread(os.path.abspath, out_dir))
    _check_line_safe("out_dir", str(out_dir))

    async with maker() as session:
        rows = (
            await session.execute(
                select(Device.id, Device.secret_hash, Device.privileged)
                .where(Device.enabled.is_(True))
                .order_by(Device.id)
            )
        ).all()

    clients: list[dict[str, Any]] = []
    roles = _static_roles()
    privileged_count = 0
    left_out: list[tuple[str, str]] = []
    for device_id, secret_hash, privileged in rows:
        if device_id in (platform_username, admin_username):
            raise ValueError(f"device id {device_id!r} equals a platform account name")
        password = dynsec_password(secret_hash) if secret_hash else None
        reason = _left_out_reason(device_id, secret_hash, password)
        if reason is not None:
            if secret_hash:  # provisioned without a secret is normal; the rest is not
                log.warning("device %r left out: %s", device_id, reason)
            left_out.append((device_id, reason))
            continue
        assert secret_hash is not None and password is not None
        clients.append(
            device_client(
                device_id, password, privileged=bool(privileged), fingerprint=fingerprint(secret_hash)
            )
        )
        if privileged:
            privileged_count += 1
        else:
            roles.append(device_role(device_id))
    devices = len(clients)
    for name, secret, role in (
        (platform_username, platform_password, PLATFORM_ROLE),
        (admin_username, admin_password, ADMIN_ROLE),
    ):
        fields = dynsec_password(hash_secret(secret))
        assert fields is not None
        clients.append({"username": name, **fields, "roles": [{"rolename": role}]})
    state = {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }

    persistence_dir = out_dir / PERSISTENCE_NAME
    dynsec = out_dir / DYNSEC_NAME
    conf = out_dir / CONF_NAME
    conf_text = _conf_text(
        listener_port=listener_port, bind=bind, plugin=plugin, dynsec=dynsec, persistence_dir=persistence_dir
    )

    def _write_all() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        persistence_dir.mkdir(mode=0o700, exist_ok=True)
        _atomic_write(dynsec, json.dumps(state, separators=(",", ":")) + "\n", 0o600)
        _atomic_write(conf, conf_text, 0o644)

    await asyncio.to_thread(_write_all)
    return BrokerConfigFiles(
        conf=conf,
        dynsec=dynsec,
        persistence_dir=persistence_dir,
        devices=devices,
        privileged=privileged_count,
        skipped=len(left_out),
        left_out=tuple(left_out),
    )


def _conf_text(*, listener_port: int, bind: str, plugin: str, dynsec: Path, persistence_dir: Path) -> str:
    return "\n".join(
        [
            "# Generated by carecall broker-config; edits are overwritten.",
            # Must precede the listener: one set of security options for all listeners.
            "per_listener_settings false",
            f"listener {listener_port} {bind}",
            "allow_anonymous false",
            # Accounts, client-id pinning and topic rules: see dynamic-security.json.
            f"plugin {plugin}",
            f"plugin_opt_config_file {dynsec}",
            "persistence true",
            # Mosquitto appends the file name to this as is, hence the trailing slash.
            f"persistence_location {persistence_dir}/",
            *DEPLOYED_SETTINGS,
            "",
        ]
    )


def _atomic_write(path: Path, text: str, mode: int) -> None:
    """Write next to ``path`` and rename over it, so readers never see a partial file.

    A file that already exists keeps its owner: Mosquitto started as root drops to its
    own user before reading these files, so an operator chowns them once, and a rerun
    of broker-config as root must not take them away again.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        try:
            old = os.stat(path)
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, old.st_uid, old.st_gid)
        except FileNotFoundError:
            pass
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

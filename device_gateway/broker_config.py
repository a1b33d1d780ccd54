"""Mosquitto 2.0 configuration generated from the device registry (``carecall broker-config``).

Production runs Mosquitto; it has to enforce the same device contract as the embedded
broker (PROTOCOL.md "Who talks") without calling back into CareCall on every connect. So
the registry is turned into Mosquitto's own files:

* ``passwd``: ``device_id:$7$...`` copied from the registry. Mosquitto 2.0 reads the
  PBKDF2-SHA512 ``$7$`` format that ``credentials.hash_secret`` writes, so no secret is
  ever needed here; only the platform account is hashed on the spot.
* ``acl``: ``pattern`` lines with ``%u`` give every device its own root (write uplink,
  read downlink) in five lines whatever the fleet size; only the platform account and
  privileged load generators get ``user`` blocks. Mosquitto checks a ``$share/{group}/...``
  subscription against the filter without the ``$share/{group}/`` prefix, so
  ``topic readwrite carecall/#`` already covers the gateway's shared subscriptions.
* ``mosquitto.conf``: one listener, no anonymous clients, persistence inside ``out_dir``.

Mosquitto reads the files only at start and on SIGHUP: rerun this after provisioning,
disabling or rekeying devices, then signal the broker.

Mosquitto cannot require client id = username (``use_username_as_clientid`` would give
every gateway copy the same client id). The ACL still confines a device to its own
topics whatever client id it uses; what remains is that a device with valid credentials
can disconnect another client by reusing its client id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.credentials import hash_secret
from device_gateway.protocol import DEVICE_ID_RE, TOPIC_PREFIX, UPLINK, Channel
from dispatcher.models import Device

log = logging.getLogger(__name__)

# Mosquitto splits passwd lines at the first ':' and the ACL at whitespace; a name with
# either, or a line break, would corrupt the file for every device after it.
_PLATFORM_USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HASH_RE = re.compile(r"^\$7\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$")
_UPLINK_ORDER = (Channel.events, Channel.telemetry, Channel.status)
_DOWNLINK_ORDER = (Channel.ack, Channel.config)
assert frozenset(_UPLINK_ORDER) == UPLINK

PASSWD_NAME = "passwd"
ACL_NAME = "acl"
CONF_NAME = "mosquitto.conf"
PERSISTENCE_NAME = "data"


@dataclass(frozen=True, slots=True)
class BrokerConfigFiles:
    """What was written, with counts so the CLI can say what the broker will accept."""

    conf: Path
    passwd: Path
    acl: Path
    persistence_dir: Path
    devices: int  # device lines in passwd
    privileged: int  # of those, load generators with a ``user`` block in acl
    skipped: int  # enabled devices left out (no secret issued, or unusable id/hash)


def _check_line_safe(name: str, value: str) -> None:
    if any(c.isspace() for c in value):
        raise ValueError(f"{name} must not contain spaces or line breaks: {value!r}")


async def write_broker_config(
    maker: async_sessionmaker[AsyncSession],
    out_dir: Path,
    *,
    platform_username: str,
    platform_password: str,
    listener_port: int = 1883,
    bind: str = "127.0.0.1",
) -> BrokerConfigFiles:
    """Write ``passwd``, ``acl`` and ``mosquitto.conf`` into ``out_dir``.

    Each file is replaced atomically, so a broker reloading meanwhile sees the old set or
    the new one, never half a file. ``passwd`` and ``acl`` are mode 0600: the hashes are
    only as strong as the file's secrecy, and the ACL lists every device id. They must be
    readable by the user Mosquitto runs as.
    """
    if not _PLATFORM_USER_RE.match(platform_username):
        raise ValueError(f"bad platform username {platform_username!r} (letters, digits, _ . @ -)")
    if not platform_password:
        raise ValueError("the platform account needs a password")
    if not 1 <= listener_port <= 65535:
        raise ValueError(f"bad listener port {listener_port}")
    _check_line_safe("bind", bind)
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

    passwd_lines: list[str] = []
    privileged_ids: list[str] = []
    skipped = 0
    for device_id, secret_hash, privileged in rows:
        if device_id == platform_username:
            raise ValueError(f"device id {device_id!r} equals the platform username")
        if not secret_hash:
            skipped += 1  # provisioned but no secret issued yet: cannot log in anyway
            continue
        if not DEVICE_ID_RE.match(device_id) or not _HASH_RE.match(secret_hash):
            log.warning("device %r left out of passwd: unusable id or secret hash", device_id)
            skipped += 1
            continue
        passwd_lines.append(f"{device_id}:{secret_hash}")
        if privileged:
            privileged_ids.append(device_id)
    passwd_lines.append(f"{platform_username}:{hash_secret(platform_password)}")

    persistence_dir = out_dir / PERSISTENCE_NAME
    passwd = out_dir / PASSWD_NAME
    acl = out_dir / ACL_NAME
    conf = out_dir / CONF_NAME
    acl_text = _acl_text(platform_username, privileged_ids)
    conf_text = _conf_text(
        listener_port=listener_port,
        bind=bind,
        passwd=passwd,
        acl=acl,
        persistence_dir=persistence_dir,
    )

    def _write_all() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        persistence_dir.mkdir(mode=0o700, exist_ok=True)
        _atomic_write(passwd, "\n".join(passwd_lines) + "\n", 0o600)
        _atomic_write(acl, acl_text, 0o600)
        _atomic_write(conf, conf_text, 0o644)

    await asyncio.to_thread(_write_all)
    return BrokerConfigFiles(
        conf=conf,
        passwd=passwd,
        acl=acl,
        persistence_dir=persistence_dir,
        devices=len(passwd_lines) - 1,
        privileged=len(privileged_ids),
        skipped=skipped,
    )


def _acl_text(platform_username: str, privileged_ids: list[str]) -> str:
    lines = [
        "# Generated by carecall broker-config from the device registry; edits are overwritten.",
        "# Every device: write its own uplink, read its own downlink (%u = its username).",
    ]
    lines += [f"pattern write {TOPIC_PREFIX}/%u/{ch.value}" for ch in _UPLINK_ORDER]
    lines += [f"pattern read {TOPIC_PREFIX}/%u/{ch.value}" for ch in _DOWNLINK_ORDER]
    lines += [
        "",
        "# The platform (gateway, API): everything under carecall/, shared subscriptions",
        "# included (Mosquitto checks those without the $share/<group>/ prefix).",
        f"user {platform_username}",
        "topic readwrite carecall/#",
    ]
    for device_id in privileged_ids:
        lines += ["", "# Privileged device (load generator): uplink on behalf of any device."]
        lines.append(f"user {device_id}")
        lines += [f"topic write {TOPIC_PREFIX}/+/{ch.value}" for ch in _UPLINK_ORDER]
    return "\n".join(lines) + "\n"


def _conf_text(*, listener_port: int, bind: str, passwd: Path, acl: Path, persistence_dir: Path) -> str:
    return "\n".join(
        [
            "# Generated by carecall broker-config; edits are overwritten.",
            # Must precede the listener: one set of security options for all listeners.
            "per_listener_settings false",
            f"listener {listener_port} {bind}",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {acl}",
            "persistence true",
            # Mosquitto appends the file name to this as is, hence the trailing slash.
            f"persistence_location {persistence_dir}/",
            # Queued QoS 1 messages for an offline gateway session: events must survive a
            # gateway restart during a burst, so the default of 1000 is far too low.
            "max_queued_messages 100000",
            "set_tcp_nodelay true",
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

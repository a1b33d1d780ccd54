"""The bus contract for "these devices changed" (channel ``devices``).

The registry announces, after its commit, every device whose ``enabled`` flag, secret or
existence changed; every gateway copy, the broker sync and the embedded broker re-read
those devices at once. The contract is the gateway's (it owns the device record): the
registry imports it from here, the edge imports nothing downstream. A lost message costs
at most the consumers' periodic full refresh: the bus is a hint, never the record.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

from pydantic import BaseModel, ConfigDict

from device_gateway.protocol import DEVICE_ID_RE

DEVICES_CHANNEL: Final = "devices"
ANNOUNCE_CHUNK: Final = 1_000  # ids per bus message (an import of a county is many messages)
MAX_ANNOUNCED_IDS: Final = 10_000  # a consumer reads at most this many from one message


class DevicesChanged(BaseModel):
    """One message on the ``devices`` channel: ``{"ids": [...], "by": actor}``."""

    model_config = ConfigDict(frozen=True)

    ids: list[str]
    by: str


class Publisher(Protocol):
    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...


async def announce_devices(bus: Publisher | None, device_ids: Iterable[str], *, by: str) -> None:
    """Tell every gateway copy (and the broker) that these devices' ``enabled`` flag,
    secret or existence changed. Call only AFTER the change has committed, so a consumer
    that re-reads the rows sees it."""
    if bus is None:
        return
    ids = sorted(set(device_ids))
    for start in range(0, len(ids), ANNOUNCE_CHUNK):
        message = DevicesChanged(ids=ids[start : start + ANNOUNCE_CHUNK], by=by)
        await bus.publish(DEVICES_CHANNEL, message.model_dump())


def announced_ids(message: object) -> list[str]:
    """The valid device ids of a ``devices`` message, in order and without repeats; []
    for anything malformed (a consumer never fails on what the bus carries)."""
    if not isinstance(message, dict):
        return []
    ids = message.get("ids")
    if not isinstance(ids, list):
        return []
    out: dict[str, None] = {}
    for i in ids[:MAX_ANNOUNCED_IDS]:
        if isinstance(i, str) and DEVICE_ID_RE.match(i):
            out[i] = None
    return list(out)


def announced_by(message: object) -> str | None:
    """Who made the change (for logs), when the message says so."""
    by = message.get("by") if isinstance(message, dict) else None
    return by if isinstance(by, str) else None

"""Topics of device protocol v1 (docs/protocol.md "Topics"): who publishes where.

``carecall/v1/devices/{device_id}/{channel}``; pure string work, so a topic outside the
contract is refused before anything else looks at the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

TOPIC_PREFIX = "carecall/v1/devices"
# \A..\Z, not ^..$: with re.match, "$" also accepts a trailing newline, and a device id
# ends up in topics, ACL files and logs. (Python-only syntax; EVENT_ID_RE is the portable one.)
DEVICE_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")


class Channel(StrEnum):
    events = "events"
    telemetry = "telemetry"
    status = "status"
    ack = "ack"
    config = "config"


UPLINK = frozenset({Channel.events, Channel.telemetry, Channel.status})
DOWNLINK = frozenset({Channel.ack, Channel.config})


@dataclass(frozen=True, slots=True)
class Topic:
    device_id: str
    channel: Channel

    @property
    def text(self) -> str:
        return f"{TOPIC_PREFIX}/{self.device_id}/{self.channel.value}"


def topic_for(device_id: str, channel: Channel) -> str:
    """Raises on a bad id: building a topic from one is a platform bug, not device input."""
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise ValueError(f"bad device id {device_id!r}")
    return f"{TOPIC_PREFIX}/{device_id}/{channel.value}"


def parse_topic(topic: str) -> Topic | None:
    """``carecall/v1/devices/{id}/{channel}`` → Topic, or None when outside the contract.

    Strict on purpose: the id decides whose home a call belongs to, so anything the broker
    ACL might have let slip (wildcards, extra levels, odd characters) is refused here too.
    """
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != TOPIC_PREFIX:
        return None
    device_id, channel = parts[3], parts[4]
    if not DEVICE_ID_RE.fullmatch(device_id):
        return None
    try:
        return Topic(device_id, Channel(channel))
    except ValueError:
        return None


def claimed_device(topic: str) -> str | None:
    """The device id a topic claims, even when the rest of the topic is wrong.

    Lets the gateway count a bad topic against the device that sent it.
    """
    parts = topic.split("/")
    if len(parts) >= 4 and "/".join(parts[:3]) == TOPIC_PREFIX:
        if DEVICE_ID_RE.fullmatch(parts[3]):
            return parts[3]
    return None

"""Device protocol v1 (docs/protocol.md): topics, payload models and their parsing.

Everything here is pure: bytes and a topic in, a parsed message or a ``Rejection`` out.
The gateway shell does the I/O. Names are fixed by the v1 contract; optional fields may
be added, nothing renamed or dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

TOPIC_PREFIX = "carecall/v1/devices"
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EVENT_ID_RE = r"^[A-Za-z0-9._:-]{1,64}$"
MAX_JSON_DEPTH = 16
MAX_METRICS = 64
MAX_METRIC_STR = 64
# Epoch-ms bounds a device clock may plausibly report (2000-01-01 .. 2100-01-01).
_TS_MIN_MS = 946_684_800_000
_TS_MAX_MS = 4_102_444_800_000


class Channel(StrEnum):
    events = "events"
    telemetry = "telemetry"
    status = "status"
    ack = "ack"
    config = "config"


UPLINK = frozenset({Channel.events, Channel.telemetry, Channel.status})
DOWNLINK = frozenset({Channel.ack, Channel.config})


class EventClass(StrEnum):
    emergency = "emergency"
    urgent = "urgent"
    info = "info"
    test = "test"
    trouble = "trouble"
    cancel = "cancel"


class AckState(StrEnum):
    received = "received"
    assigned = "assigned"
    en_route = "en_route"
    on_scene = "on_scene"
    resolved = "resolved"
    rejected = "rejected"


class Reason(StrEnum):
    """Why a message was rejected; counted per device and reason."""

    too_large = "too_large"
    not_utf8 = "not_utf8"
    not_json = "not_json"
    too_deep = "too_deep"
    not_object = "not_object"
    missing_field = "missing_field"
    wrong_type = "wrong_type"
    bad_value = "bad_value"
    bad_topic = "bad_topic"
    unknown_device = "unknown_device"
    disabled_device = "disabled_device"


# PROTOCOL.md "type" table: the default class of every v1 event type.
DEFAULT_CLASS: dict[str, EventClass] = {
    "sos": EventClass.emergency,
    "fall": EventClass.emergency,
    "vital_alert": EventClass.emergency,
    "smoke": EventClass.emergency,
    "gas": EventClass.emergency,
    "water_leak": EventClass.emergency,
    "inactivity": EventClass.urgent,
    "bed_exit": EventClass.info,
    "door_open": EventClass.info,
    "cancel": EventClass.cancel,
    "test": EventClass.test,
    "low_battery": EventClass.trouble,
    "tamper": EventClass.trouble,
    "power_loss": EventClass.trouble,
    "power_restored": EventClass.trouble,
    # raised by the platform itself (supervision)
    "offline": EventClass.trouble,
    "online": EventClass.trouble,
}
V1_TYPES = frozenset(DEFAULT_CLASS) - {"offline", "online"}
# A restore clears the trouble its partner raised.
RESTORES: dict[str, str] = {"online": "offline", "power_restored": "power_loss"}


def is_night(local_hour: int, start: int = 22, end: int = 6) -> bool:
    return local_hour >= start or local_hour < end


def classify(event_type: str, data: dict[str, Any], local_hour: int) -> EventClass:
    """The class of an event. Unknown types are trouble, never dropped."""
    cls = DEFAULT_CLASS.get(event_type, EventClass.trouble)
    if event_type == "bed_exit" and data.get("returned") is False and is_night(local_hour):
        return EventClass.urgent
    if event_type == "door_open" and is_night(local_hour):
        # wandering risk at night stays info by default; the dispatcher may raise it
        return EventClass.info
    return cls


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True, slots=True)
class Topic:
    device_id: str
    channel: Channel

    @property
    def text(self) -> str:
        return f"{TOPIC_PREFIX}/{self.device_id}/{self.channel.value}"


def topic_for(device_id: str, channel: Channel) -> str:
    if not DEVICE_ID_RE.match(device_id):
        raise ValueError(f"bad device id {device_id!r}")
    return f"{TOPIC_PREFIX}/{device_id}/{channel.value}"


def parse_topic(topic: str) -> Topic | None:
    """``carecall/v1/devices/{id}/{channel}`` → Topic, or None when outside the contract."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != TOPIC_PREFIX:
        return None
    device_id, channel = parts[3], parts[4]
    if not DEVICE_ID_RE.match(device_id):
        return None
    try:
        return Topic(device_id, Channel(channel))
    except ValueError:
        return None


def claimed_device(topic: str) -> str | None:
    """The device id a topic claims, even when the rest of the topic is wrong."""
    parts = topic.split("/")
    if len(parts) >= 4 and "/".join(parts[:3]) == TOPIC_PREFIX and DEVICE_ID_RE.match(parts[3]):
        return parts[3]
    return None


# --------------------------------------------------------------------------- payloads

Timestamp = StrictInt | StrictStr


def parse_ts(value: int | str) -> datetime:
    """Epoch milliseconds or RFC 3339 with offset → aware UTC datetime."""
    if isinstance(value, int):
        if not _TS_MIN_MS <= value <= _TS_MAX_MS:
            raise ValueError("ts out of range (epoch milliseconds expected)")
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    text = value.strip()
    if len(text) > 40:
        raise ValueError("ts too long")
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError("ts needs a UTC offset (RFC 3339)")
    if not 2000 <= dt.year < 2100:
        raise ValueError("ts out of range")
    return dt.astimezone(UTC)


class Location(BaseModel):
    model_config = ConfigDict(extra="allow")
    lat: Annotated[StrictFloat | StrictInt, Field(ge=-90, le=90)]
    lon: Annotated[StrictFloat | StrictInt, Field(ge=-180, le=180)]
    accuracy_m: Annotated[StrictFloat | StrictInt, Field(ge=0)] | None = None


class EventMessage(BaseModel):
    """``{root}/events`` payload."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Annotated[StrictStr, Field(pattern=EVENT_ID_RE)]
    ts: Timestamp
    type: Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    sensor: Annotated[StrictStr, Field(max_length=64)] | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: int | str) -> int | str:
        parse_ts(v)
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "location" in v:
            Location.model_validate(v["location"])
        if v.get("type") == "cancel" and "ref" in v and not isinstance(v["ref"], str):
            raise ValueError("data.ref must be a string")
        return v

    @property
    def happened_at(self) -> datetime:
        return parse_ts(self.ts)

    @property
    def location(self) -> Location | None:
        loc = self.data.get("location")
        return Location.model_validate(loc) if loc is not None else None


MetricValue = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=MAX_METRIC_STR)]


class TelemetryMessage(BaseModel):
    """``{root}/telemetry`` payload: a flat map of readings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ts: Timestamp | None = None
    metrics: dict[Annotated[str, Field(max_length=64)], MetricValue] = Field(max_length=MAX_METRICS)

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_ts(v)
        return v


class StatusMessage(BaseModel):
    """``{root}/status`` payload (retained; the offline one is the MQTT will)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    state: Literal["online", "offline"]


class AckMessage(BaseModel):
    """``{root}/ack`` payload, platform → device."""

    model_config = ConfigDict(extra="allow", frozen=True)
    event_id: str
    state: AckState
    ts: int
    reason: str | None = None


class ConfigMessage(BaseModel):
    """``{root}/config`` payload (retained), platform → device."""

    model_config = ConfigDict(extra="allow", frozen=True)
    heartbeat_s: int | None = None


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _depth(obj: Any, limit: int) -> int:
    """Depth of nested containers, stopping once past ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    deepest = 0
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        stack.extend((c, d + 1) for c in children)
    return deepest


def decode_json(payload: bytes, max_bytes: int) -> dict[str, Any] | Rejection:
    if len(payload) > max_bytes:
        return Rejection(Reason.too_large, f"{len(payload)} bytes > {max_bytes}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.not_utf8, f"invalid UTF-8 at byte {exc.start}")
    # Cheap pre-check so pathological nesting never reaches the recursive parser.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _nesting(text) > MAX_JSON_DEPTH:
        return Rejection(Reason.too_deep, f"nesting deeper than {MAX_JSON_DEPTH}")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return Rejection(Reason.not_json, str(exc)[:200])
    if not isinstance(obj, dict):
        return Rejection(Reason.not_object, f"JSON {type(obj).__name__} where an object is required")
    return obj


def _nesting(text: str) -> int:
    """Maximum bracket nesting outside strings."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _validation_rejection(exc: ValidationError) -> Rejection:
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "payload"
    etype = err.get("type", "")
    if etype == "missing":
        return Rejection(Reason.missing_field, f"missing required field {loc!r}")
    if etype.endswith("_type") or etype in ("model_type", "dict_type", "int_from_float", "literal_error"):
        reason = Reason.bad_value if etype == "literal_error" else Reason.wrong_type
        return Rejection(reason, f"{loc}: {err.get('msg', 'wrong type')}"[:300])
    return Rejection(Reason.bad_value, f"{loc}: {err.get('msg', 'bad value')}"[:300])


def parse_event(payload: bytes, max_bytes: int = 16 * 1024) -> EventMessage | Rejection:
    obj = decode_json(payload, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    try:
        return EventMessage.model_validate(obj)
    except ValidationError as exc:
        return _validation_rejection(exc)
    except (ValueError, OverflowError) as exc:
        return Rejection(Reason.bad_value, str(exc)[:300])


def parse_telemetry(payload: bytes, max_bytes: int = 16 * 1024) -> TelemetryMessage | Rejection:
    obj = decode_json(payload, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    try:
        return TelemetryMessage.model_validate(obj)
    except ValidationError as exc:
        return _validation_rejection(exc)
    except (ValueError, OverflowError) as exc:
        return Rejection(Reason.bad_value, str(exc)[:300])


def parse_status(payload: bytes, max_bytes: int = 16 * 1024) -> StatusMessage | Rejection:
    obj = decode_json(payload, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    try:
        return StatusMessage.model_validate(obj)
    except ValidationError as exc:
        return _validation_rejection(exc)


def ack_payload(event_id: str, state: AckState, ts_ms: int, reason: str | None = None) -> bytes:
    body: dict[str, Any] = {"event_id": event_id, "state": state.value, "ts": ts_ms}
    if reason is not None:
        body["reason"] = reason
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def excerpt(payload: bytes, limit: int) -> str:
    """A printable, truncated copy of a payload for inspection."""
    head = payload[:limit]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(head)[2:-1]
    text = text.replace("\x00", "\\x00")
    return text + ("…" if len(payload) > limit else "")

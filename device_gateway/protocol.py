"""Device protocol v1 (docs/protocol.md): topics, payload models and their parsing.

Everything here is pure: bytes and a topic in, a parsed message or a ``Rejection`` out,
so the gateway can never be brought down by what a device sends and the rules can be
tested without a broker. The gateway shell does the I/O. Names are fixed by the v1
contract; optional fields may be added, nothing renamed or dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

__all__ = [
    "DEFAULT_CLASS",
    "DEVICE_ID_RE",
    "DOWNLINK",
    "EVENT_ID_RE",
    "MAX_INT_DIGITS",
    "MAX_JSON_DEPTH",
    "MAX_METRICS",
    "MAX_METRIC_STR",
    "MAX_PAYLOAD_BYTES",
    "RESTORES",
    "RFC3339_RE",
    "TOPIC_PREFIX",
    "UPLINK",
    "V1_TYPES",
    "AckMessage",
    "AckState",
    "Channel",
    "ConfigMessage",
    "EventClass",
    "EventData",
    "EventMessage",
    "Location",
    "LocationData",
    "MetricValue",
    "Reason",
    "Rejection",
    "StatusMessage",
    "TelemetryMessage",
    "Timestamp",
    "Topic",
    "ack_payload",
    "claimed_device",
    "classify",
    "decode_json",
    "excerpt",
    "is_night",
    "parse_event",
    "parse_status",
    "parse_telemetry",
    "parse_topic",
    "parse_ts",
    "topic_for",
]

TOPIC_PREFIX = "carecall/v1/devices"
# \A..\Z, not ^..$: with re.match, "$" also accepts a trailing newline, and a device id
# ends up in topics, ACL files and logs. (Python-only syntax; EVENT_ID_RE is the portable one.)
DEVICE_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
# A pattern string (not compiled) because pydantic and the JSON Schemas consume it.
EVENT_ID_RE = r"^[A-Za-z0-9._:-]{1,64}$"
# RFC 3339 date-time with a mandatory offset. Digits are spelled [0-9] because \d also
# matches non-ASCII digits; a space instead of "T" is tolerated (RFC 3339 §5.6 note).
RFC3339_RE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_RE)
MAX_PAYLOAD_BYTES = 16 * 1024
# Real payloads nest 3 levels (event → data → location); 16 leaves room for device
# makers and keeps pathological nesting away from recursive code.
MAX_JSON_DEPTH = 16
# No reading or id is a 65-digit integer; refusing them early also spares the parser the
# quadratic cost of converting (and Python's 4300-digit ValueError).
MAX_INT_DIGITS = 64
MAX_METRICS = 64
MAX_METRIC_STR = 64
# Epoch-ms bounds a device clock may plausibly report (2000-01-01 .. 2100-01-01); outside
# them the device is almost certainly sending seconds, or an unset clock.
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
    """Why a message was rejected; counted per device and reason, and sent in the ack."""

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
    """Night wraps past midnight, so it is a union of two ranges, not one."""
    return local_hour >= start or local_hour < end


def classify(event_type: str, data: dict[str, Any], local_hour: int) -> EventClass:
    """The class of an event. Unknown types are trouble, never dropped.

    Only ``bed_exit`` depends on context: an elder not back in bed at night may be on the
    floor. ``door_open`` at night stays info here; raising it is the dispatcher's call.
    """
    if event_type == "bed_exit" and data.get("returned") is False and is_night(local_hour):
        return EventClass.urgent
    return DEFAULT_CLASS.get(event_type, EventClass.trouble)


# --------------------------------------------------------------------------- topics


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


# --------------------------------------------------------------------------- payloads

Timestamp = (
    Annotated[
        StrictInt,
        Field(
            ge=_TS_MIN_MS,
            le=_TS_MAX_MS,
            description="Epoch milliseconds (UTC), between 2000-01-01 and 2100-01-01.",
        ),
    ]
    | Annotated[
        StrictStr,
        Field(
            max_length=40,
            pattern=RFC3339_RE,
            description="RFC 3339 date-time with an offset, e.g. 2025-11-26T09:30:00+08:00.",
            json_schema_extra={"format": "date-time"},
        ),
    ]
)


def parse_ts(value: int | str) -> datetime:
    """Epoch milliseconds or RFC 3339 with offset → aware UTC datetime.

    A timestamp without an offset is refused rather than guessed: a home clock in local
    time read as UTC would put a fall eight hours in the past.
    """
    if isinstance(value, bool):
        raise ValueError("ts must be a number or a string, not a boolean")
    if isinstance(value, int):
        if not _TS_MIN_MS <= value <= _TS_MAX_MS:
            raise ValueError("ts out of range (epoch milliseconds expected)")
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if len(value) > 40 or not (m := _RFC3339.fullmatch(value)):
        raise ValueError("ts must be RFC 3339 with an offset, e.g. 2025-11-26T09:30:00+08:00")
    text = value[:10] + "T" + value[11:]
    if m.group(1):  # fromisoformat takes at most microseconds
        text = text.replace(m.group(1), m.group(1)[:7], 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)  # rejects 25:00, Feb 30, leap seconds
    if not 2000 <= dt.year < 2100:
        raise ValueError("ts out of range")
    return dt.astimezone(UTC)


Latitude = Annotated[StrictFloat, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[StrictFloat, Field(ge=-180, le=180, allow_inf_nan=False)]
AccuracyM = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]


class Location(BaseModel):
    """Where the resident is (WGS 84), so dispatch goes there rather than to the home."""

    model_config = ConfigDict(extra="allow")
    lat: Latitude
    lon: Longitude
    accuracy_m: AccuracyM | None = None


@with_config(ConfigDict(extra="allow", title="Location"))
class LocationData(TypedDict):
    """Where the resident is (WGS 84), so dispatch goes there rather than to the home.

    accuracy_m is the radius in metres; extra keys (altitude, fix source) are kept.
    """

    lat: Latitude
    lon: Longitude
    accuracy_m: NotRequired[AccuracyM | None]


@with_config(ConfigDict(extra="allow", title="EventData"))
class EventData(TypedDict, total=False):
    """Type-specific fields, free-form so new device models never lose a call.

    Only location is checked for every type, and ref for cancel. Known fields: hr, rr
    (vital_alert), minutes (inactivity), returned (bed_exit: false when not back in
    time), ref (cancel: the id of the event being cancelled).
    """

    location: LocationData | None


# Statically a plain dict (what the rest of the platform stores and passes around);
# validated through EventData so location errors point at data.location.*.
_EventDataDict = Annotated[dict[str, Any], GetPydanticSchema(lambda _t, h: h(EventData))]


class EventMessage(BaseModel):
    """One thing that happened in a home, published on carecall/v1/devices/{id}/events.

    Devices resend it until the platform acks "received"; the platform treats a
    repeated (device, id) as the same event, never as a second call.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="CareCall v1 event")

    id: Annotated[
        StrictStr,
        Field(
            pattern=EVENT_ID_RE,
            description="Unique per device; resends reuse it so they are not new calls.",
        ),
    ]
    ts: Timestamp = Field(description="When it happened, by the device clock.")
    type: Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=64,
            description=(
                "What happened. Types outside the v1 set are accepted and handled as "
                "device trouble with the raw type shown."
            ),
            examples=sorted(V1_TYPES),
        ),
    ]
    sensor: Annotated[StrictStr, Field(max_length=64)] | None = Field(
        default=None, description="Which sensor behind a hub fired (hubs only)."
    )
    data: _EventDataDict = Field(default_factory=dict, description="Type-specific fields (see EventData).")

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: int | str) -> int | str:
        parse_ts(v)  # the pattern cannot see calendar errors such as February 30
        return v

    @model_validator(mode="after")
    def _cancel_ref(self) -> Self:
        # Only a cancel gives "ref" a meaning; other types may use the key freely.
        if self.type == "cancel" and "ref" in self.data and not isinstance(self.data["ref"], str):
            raise PydanticCustomError(
                "ref_type", "data.ref must be the id (a string) of the event being cancelled"
            )
        return self

    @property
    def happened_at(self) -> datetime:
        return parse_ts(self.ts)

    @property
    def location(self) -> Location | None:
        loc = self.data.get("location")
        return Location.model_validate(loc) if loc is not None else None


MetricValue = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=MAX_METRIC_STR)]


class TelemetryMessage(BaseModel):
    """Latest readings, published on carecall/v1/devices/{id}/telemetry.

    Also the heartbeat: a device with nothing to report sends it at its interval. The
    platform derives alarms from the values, so simple devices still raise calls.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="CareCall v1 telemetry")

    ts: Timestamp | None = Field(default=None, description="When the readings were taken.")
    metrics: dict[
        Annotated[str, Field(min_length=1, max_length=64)],
        MetricValue,
    ] = Field(
        max_length=MAX_METRICS,
        description=(
            "Flat map of readings: numbers, booleans or short strings, e.g. hr, rr, "
            "presence, motion, battery_pct, rssi_dbm."
        ),
    )

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_ts(v)
        return v


class StatusMessage(BaseModel):
    """Availability on carecall/v1/devices/{id}/status, retained.

    "online" on connect; the same topic with "offline" is the MQTT will, so the
    broker reports a device that vanished without a goodbye.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="CareCall v1 status")
    state: Literal["online", "offline"] = Field(
        description="online when connected; offline is the MQTT will (or a clean goodbye)."
    )


class AckMessage(BaseModel):
    """Progress of one event, platform → device on carecall/v1/devices/{id}/ack.

    The device stops resending on "received" and turns later states into a light or a
    spoken line for the resident.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="CareCall v1 ack")
    # Strict like the published schema: a device library is entitled to expect exactly it.
    event_id: StrictStr = Field(
        description=("The id of the event this is about; empty when a rejected message had no readable id.")
    )
    state: AckState = Field(description="received, assigned, en_route, on_scene, resolved, rejected")
    ts: StrictInt = Field(description="When the platform sent this, epoch milliseconds.")
    reason: StrictStr | None = Field(
        default=None,
        description=(
            "With state rejected: starts with the reason code (see examples), optionally "
            "followed by ': ' and a human-readable detail."
        ),
        examples=[r.value for r in Reason],
    )


class ConfigMessage(BaseModel):
    """Settings the device should apply, platform → device on .../config, retained.

    Retained so a device that reconnects gets its settings without asking.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="CareCall v1 config")
    heartbeat_s: StrictInt | None = Field(
        default=None, ge=1, description="Send at least one uplink message this often (s)."
    )


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


class _BadNumber(ValueError):
    """A number JSON allows but no device reading can be; reported as bad_value."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise _BadNumber(f"integer with {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber(f"number {text[:40]} is out of range")
    return value


def _nesting(text: str) -> int:
    """Maximum bracket nesting outside strings, found without recursion."""
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


def _unstorable(obj: Any) -> Rejection | None:
    """Strings the database and the console cannot hold: NUL, and lone surrogates.

    JSON escapes (\\u0000, \\ud800) let both through valid UTF-8, and they would fail
    later at insert time, after the device had already been told nothing was wrong.
    """
    stack: list[Any] = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return Rejection(Reason.not_utf8, "string with a lone UTF-16 surrogate escape")
        if isinstance(node, str) and "\x00" in node:
            return Rejection(Reason.bad_value, "string contains NUL (\\u0000)")
    return None


def decode_json(payload: bytes, max_bytes: int) -> dict[str, Any] | Rejection:
    """Bytes → JSON object, refusing early whatever could hurt the parser or storage."""
    if len(payload) > max_bytes:
        return Rejection(Reason.too_large, f"{len(payload)} bytes > {max_bytes}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.not_utf8, f"invalid UTF-8 at byte {exc.start}")
    # Cheap pre-check so pathological nesting never reaches the recursive parser.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _nesting(text) > MAX_JSON_DEPTH:
        return Rejection(Reason.too_deep, f"nesting deeper than {MAX_JSON_DEPTH}")
    try:
        obj = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except _BadNumber as exc:
        return Rejection(Reason.bad_value, str(exc))
    except (ValueError, RecursionError) as exc:
        return Rejection(Reason.not_json, str(exc)[:200])
    if not isinstance(obj, dict):
        kind = "array" if isinstance(obj, list) else type(obj).__name__
        return Rejection(Reason.not_object, f"JSON {kind} where an object is required")
    return _unstorable(obj) or obj


def _field_path(obj: Any, loc: tuple[int | str, ...]) -> str:
    """Dotted path into the payload, skipping pydantic's union-member labels."""
    path: list[str] = []
    node = obj
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif i == len(loc) - 1 and isinstance(node, dict):
            pass  # a missing key
        else:
            continue
        path.append(str(part) or '""')
    return ".".join(path)


def _error_reason(err: Any) -> Reason:
    etype: str = err["type"]
    if etype == "missing":
        return Reason.missing_field
    if etype in ("literal_error", "enum"):
        # Right type, value outside the set; a number where a word belongs is a type error.
        return Reason.bad_value if isinstance(err.get("input"), str) else Reason.wrong_type
    if etype.endswith("_type"):
        return Reason.wrong_type
    return Reason.bad_value


_PRECEDENCE = (Reason.missing_field, Reason.bad_value, Reason.wrong_type)


def _validation_rejection(exc: ValidationError, obj: Any) -> Rejection:
    """One reason per message, the most telling: missing beats bad value beats wrong type.

    A union reports one error per member; if any member accepted the type, the value
    is what was wrong (ts = 10 is a bad value, ts = true a wrong type).
    """
    errors = exc.errors(include_url=False)
    reasons = [_error_reason(e) for e in errors]
    wanted = min(reasons, key=_PRECEDENCE.index)
    err = errors[reasons.index(wanted)]
    path = _field_path(obj, tuple(err["loc"]))
    if wanted is Reason.missing_field:
        return Rejection(wanted, f"missing required field {path!r}")
    msg: str = err.get("msg", "invalid")
    same_field = [e for e in errors if _field_path(obj, tuple(e["loc"])) == path]
    if wanted is Reason.wrong_type and len(same_field) > 1:
        # Naming only the first union member ("should be a valid boolean") misleads.
        msg = f"{_json_kind(err.get('input'))} is not an accepted type here"
    return Rejection(wanted, (f"{path}: {msg}" if path else msg)[:300])


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], payload: bytes, max_bytes: int) -> _M | Rejection:
    obj = decode_json(payload, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        return _validation_rejection(exc, obj)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Defence in depth: a parser that raises would let one device stall the gateway.
        return Rejection(Reason.bad_value, str(exc)[:300])


def parse_event(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> EventMessage | Rejection:
    return _parse(EventMessage, payload, max_bytes)


def parse_telemetry(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> TelemetryMessage | Rejection:
    return _parse(TelemetryMessage, payload, max_bytes)


def parse_status(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> StatusMessage | Rejection:
    return _parse(StatusMessage, payload, max_bytes)


def ack_payload(event_id: str, state: AckState, ts_ms: int, reason: str | None = None) -> bytes:
    body: dict[str, Any] = {"event_id": event_id, "state": state.value, "ts": ts_ms}
    if reason is not None:
        body["reason"] = reason
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def excerpt(payload: bytes, limit: int) -> str:
    """A printable, truncated copy of a payload for inspection.

    Undecodable bytes become ``\\xNN`` one by one, so a cut through a multi-byte
    character or a single stray byte does not hide the readable rest. NUL is escaped
    because PostgreSQL text cannot hold it.
    """
    head = bytes(payload[: max(limit, 0)])
    text = head.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    return text + ("…" if len(payload) > limit else "")

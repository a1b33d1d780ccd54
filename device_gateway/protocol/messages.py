"""Messages of device protocol v1 (docs/protocol.md): event classes and the payload models.

The models are the contract: the gateway validates against them, the JSON Schemas are
generated from them (device_gateway/schemas.py) and simulated devices build and read them.
Names are fixed by the v1 contract; optional fields may be added, nothing renamed or dropped.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NotRequired, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    JsonValue,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

# A pattern string (not compiled) because pydantic and the JSON Schemas consume it.
EVENT_ID_RE = r"^[A-Za-z0-9._:-]{1,64}$"
# RFC 3339 date-time with a mandatory offset. Digits are spelled [0-9] because \d also
# matches non-ASCII digits; a space instead of "T" is tolerated (RFC 3339 §5.6 note).
RFC3339_RE = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_RFC3339 = re.compile(RFC3339_RE)
MAX_METRICS = 64
MAX_METRIC_STR = 64
# Epoch-ms bounds a device clock may plausibly report (2000-01-01 .. 2100-01-01); outside
# them the device is almost certainly sending seconds, or an unset clock.
TS_MIN_MS = 946_684_800_000
TS_MAX_MS = 4_102_444_800_000


class EventClass(StrEnum):
    emergency = "emergency"
    urgent = "urgent"
    info = "info"
    test = "test"
    trouble = "trouble"
    cancel = "cancel"
    # an everyday service request (meal, cleaning …): becomes a service order, never a call
    service = "service"


# docs/protocol.md "service_request": what a device's service button may ask for.
SERVICE_KINDS = frozenset(
    {"meal", "mobility", "medical", "cleaning", "shopping", "bathing", "repair", "chat", "other"}
)

# docs/protocol.md "type" table: the default class of every v1 event type.
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
    "service_request": EventClass.service,
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


Timestamp = (
    Annotated[
        StrictInt,
        Field(
            ge=TS_MIN_MS,
            le=TS_MAX_MS,
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
        if not TS_MIN_MS <= value <= TS_MAX_MS:
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

    Only location is checked for every type, ref for cancel and kind for
    service_request. Known fields: hr, rr (vital_alert), minutes (inactivity), returned
    (bed_exit: false when not back in time), ref (cancel: the id of the event being
    cancelled), kind (service_request: meal, mobility, medical, cleaning, shopping,
    bathing, repair, chat or other).
    """

    location: LocationData | None


# Statically a plain dict (what the rest of the platform stores and passes around);
# validated through EventData so location errors point at data.location.*.
_EventDataDict = Annotated[dict[str, Any], GetPydanticSchema(lambda _t, h: h(EventData))]


_SERVICE_KIND_ENUM: list[JsonValue] = [*sorted(SERVICE_KINDS)]


class EventMessage(BaseModel):
    """One thing that happened in a home, published on carecall/v1/devices/{id}/events.

    Devices resend it until the platform acks "received"; the platform treats a
    repeated (device, id) as the same event, never as a second call.
    """

    model_config = ConfigDict(
        extra="allow",
        frozen=True,
        title="CareCall v1 event",
        # the service_request rule of _cancel_ref, stated in the published schema too
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "service_request"}}, "required": ["type"]},
                    "then": {
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "required": ["kind"],
                                "properties": {"kind": {"enum": _SERVICE_KIND_ENUM}},
                            }
                        },
                    },
                }
            ]
        },
    )

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
        if self.type == "service_request" and self.data.get("kind") not in SERVICE_KINDS:
            raise PydanticCustomError(
                "service_kind",
                "data.kind of a service_request must be one of: {kinds}",
                {"kinds": ", ".join(sorted(SERVICE_KINDS))},
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


class ConfigMessage(BaseModel):
    """Settings the device should apply, platform → device on .../config, retained.

    Retained so a device that reconnects gets its settings without asking.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="CareCall v1 config")
    heartbeat_s: StrictInt | None = Field(
        default=None, ge=1, description="Send at least one uplink message this often (s)."
    )


def config_payload(heartbeat_s: int) -> bytes:
    """The retained config message the platform pushes to a device (``ConfigMessage``)."""
    return json.dumps({"heartbeat_s": heartbeat_s}, separators=(",", ":")).encode()

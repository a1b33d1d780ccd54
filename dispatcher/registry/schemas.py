"""One validated row per registry kind, shared by file import, export and the demo county.

Registry files are typed by county staff in Excel, so the models accept what people
actually type (``是``/``否``, ``男``/``女``, full-width ``；``) and turn it into one
canonical form; export writes only that canonical form so every export re-imports.
Multi-valued cells use a fixed encoding: conditions are ``;``-separated and contacts are
``name/relation/phone; name/relation/phone`` in the order they should be called.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from config.types import TimeZoneName
from device_gateway.kinds import DEFAULT_HEARTBEAT_S, DeviceKind
from dispatcher.notifications.channels.models import ChannelKind
from dispatcher.registry.models import TIER_OF_KIND, Area, StationKind, Tier
from dispatcher.registry.reasons import refusal

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ID_RE = re.compile(ID_PATTERN)
# Loose on purpose: mobiles (13812345678), landlines (0377-61234567), +86 prefixes.
PHONE_PATTERN = r"^\+?[0-9][0-9 ()-]{2,38}$"
# A home's fixed line or a resident's mobile: digits, an optional leading +, spaces and
# dashes between groups (0377-6123 4567, +86 138 1234 5678); 40 characters at most.
LINE_PHONE_PATTERN = r"^\+?[0-9][0-9 -]*$"
MAX_PHONE = 40

# Separators people type for lists in one cell; the first of each is what export writes.
CONDITION_SEPARATORS = (";", "；", "、")
CONTACT_SEPARATORS = (";", "；")
CONTACT_FIELD_SEPARATORS = ("/", "／")
# A contact's channel order rides in the contact cell as a fourth field:
# ``name/relation/phone/sms voice``.

_TRUE = frozenset({"true", "t", "yes", "y", "1", "on", "是", "对", "√"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off", "否", "不", "×"})

MIN_SECRET_LEN = 16
# Free text and lists a person types: generous for real use, bounded so one request
# cannot store megabytes (the HTTP body limit is the outer bound).
MAX_NOTES = 2000
MAX_CONDITIONS = 50
MAX_CONTACTS = 20
# Hand-off facts read out to 120/110/119: a paragraph, not a file.
MAX_HANDOFF = 1000
MAX_CHANNELS_TEXT = 100
CHANNEL_NAMES: tuple[str, ...] = tuple(k.value for k in ChannelKind)


def _parse_flag(value: Any) -> Any:
    """Booleans arrive as text from CSV and as 是/否 from Chinese spreadsheets."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise refusal("not_boolean")
    return value


_E = TypeVar("_E", bound=StrEnum)


def _enum_or_none(enum: type[_E], value: Any) -> _E | None:
    try:
        return enum(str(value or "").strip())
    except ValueError:
        return None


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


SHIFT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _parse_shifts(value: Any) -> str:
    """A roster cell: shift names separated by spaces, commas or semicolons (or a list
    in YAML/JSON), normalised to sorted unique names joined by one space."""
    if value is None:
        return ""
    parts = (
        [str(v) for v in value] if isinstance(value, list | tuple) else re.split(r"[\s,;、，；]+", str(value))
    )
    names = sorted({p.strip().lower() for p in parts if p.strip()})
    for name in names:
        if not SHIFT_NAME.match(name):
            raise refusal("shift_name", name=name)
    joined = " ".join(names)
    if len(joined) > 200:
        raise refusal("too_many_shifts")
    return joined


Shifts = Annotated[str, BeforeValidator(_parse_shifts)]


def _parse_line_phone(value: Any) -> Any:
    """A fixed line or mobile as typed; "" when there is none."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a spreadsheet cell typed as a number
    if not isinstance(value, str):
        return value
    text = " ".join(value.split())
    if len(text) > MAX_PHONE:
        raise refusal("phone_too_long", max=MAX_PHONE)
    if text and not re.match(LINE_PHONE_PATTERN, text):
        raise refusal("phone_format")
    return text


def _parse_channels(value: Any) -> Any:
    """A person's channel order: known channel names separated by spaces or commas (or a
    list), kept in the order given, joined by one space; "" = the purpose's order."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        parts = [str(v) for v in value]
    elif isinstance(value, str):
        parts = re.split(r"[\s,;、，；]+", value)
    else:
        return value
    names: list[str] = []
    for part in (p.strip().lower() for p in parts):
        if not part:
            continue
        if part not in CHANNEL_NAMES:
            raise refusal("unknown_channel", channel=part, channels=", ".join(CHANNEL_NAMES))
        if part in names:
            raise refusal("channel_twice", channel=part)
        names.append(part)
    return " ".join(names)


LinePhone = Annotated[str, BeforeValidator(_parse_line_phone)]
Channels = Annotated[str, BeforeValidator(_parse_channels)]
HandoffText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_HANDOFF)]
Id = Annotated[str, StringConstraints(strip_whitespace=True, pattern=ID_PATTERN)]
OptionalId = Annotated[Id | None, BeforeValidator(_blank_to_none)]
Flag = Annotated[bool, BeforeValidator(_parse_flag)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
StationName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Address = Annotated[str, StringConstraints(strip_whitespace=True, max_length=300)]
Notes = Annotated[str, StringConstraints(max_length=MAX_NOTES)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=PHONE_PATTERN)]
OptionalPhone = Annotated[str, StringConstraints(strip_whitespace=True, max_length=40)]
Lat = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Lon = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
HeartRate = Annotated[Annotated[int, Field(ge=20, le=250)] | None, BeforeValidator(_blank_to_none)]
BreathRate = Annotated[Annotated[int, Field(ge=4, le=80)] | None, BeforeValidator(_blank_to_none)]


class StaffRole(StrEnum):
    operator = "operator"
    responder = "responder"
    nurse = "nurse"
    doctor = "doctor"
    manager = "manager"
    supervisor = "supervisor"


# The tier a station's parent must have: the tree is county > street > community.
PARENT_TIER: dict[Tier, Tier | None] = {
    Tier.county: None,
    Tier.street: Tier.county,
    Tier.community: Tier.street,
}


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    kind_name: ClassVar[str]


def _check_text(value: str, code: str, forbidden: tuple[str, ...]) -> str:
    """Reject characters that would break the one-cell encoding on the next export
    (``code``: the reason, naming what the value is)."""
    for sep in forbidden:
        if sep in value:
            raise refusal(code, value=value, sep=sep)
    return value


class StationRow(_Row):
    kind_name: ClassVar[str] = "stations"

    id: Id
    name: StationName
    tier: Tier
    kind: StationKind
    parent_id: OptionalId = None
    lat: Lat
    lon: Lon
    address: Address = ""
    phone: OptionalPhone = ""
    area: Area = Area.urban
    timezone: TimeZoneName = "Asia/Shanghai"

    @model_validator(mode="before")
    @classmethod
    def _tier_from_kind(cls, data: Any) -> Any:
        # The kind already fixes the tier, so an empty tier cell is filled rather than refused.
        if isinstance(data, dict) and not str(data.get("tier") or "").strip():
            kind = _enum_or_none(StationKind, data.get("kind"))
            if kind is not None:
                data = {**data, "tier": TIER_OF_KIND[kind].value}
        return data

    @model_validator(mode="after")
    def _tree_shape(self) -> StationRow:
        expected = TIER_OF_KIND[self.kind]
        if self.tier != expected:
            raise refusal("tier_kind", tier=self.tier.value, kind=self.kind.value, expected=expected.value)
        if self.tier is Tier.county and self.parent_id is not None:
            raise refusal("county_no_parent")
        if self.tier is not Tier.county and self.parent_id is None:
            parent_tier = PARENT_TIER[self.tier]
            assert parent_tier is not None
            raise refusal("needs_parent", tier=self.tier.value, parent_tier=parent_tier.value)
        if self.parent_id == self.id:
            raise refusal("own_parent")
        return self


class StaffRow(_Row):
    kind_name: ClassVar[str] = "staff"

    id: Id
    station_id: Id
    name: Name
    role: StaffRole
    phone: OptionalPhone = ""
    on_duty: Flag = False
    shifts: Shifts = ""
    channels: Channels = ""


class HomeRow(_Row):
    kind_name: ClassVar[str] = "homes"

    id: Id
    station_id: Id
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
    lat: Lat
    lon: Lon
    area: Area = Area.urban
    notes: Notes = ""
    phone: LinePhone = ""


class ContactRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: Name
    relation: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
    phone: Phone
    priority: int = Field(default=1, ge=1, le=99)
    channels: Channels = ""

    @field_validator("name", "relation")
    @classmethod
    def _encodable(cls, value: str) -> str:
        return _check_text(value, "contact_field_separator", CONTACT_FIELD_SEPARATORS + CONTACT_SEPARATORS)


def _split(text: str, separators: tuple[str, ...]) -> list[str]:
    for sep in separators[1:]:
        text = text.replace(sep, separators[0])
    return [part.strip() for part in text.split(separators[0]) if part.strip()]


def parse_contacts(cell: str) -> list[dict[str, Any]]:
    """Decode ``name/relation/phone[/channels]; ...``; position gives the calling priority."""
    contacts: list[dict[str, Any]] = []
    for number, item in enumerate(_split(cell, CONTACT_SEPARATORS), start=1):
        fields = _split(item, CONTACT_FIELD_SEPARATORS)
        if len(fields) not in (3, 4):
            raise refusal("contact_form", number=number, item=item)
        name, relation, phone = fields[:3]
        contact = {"name": name, "relation": relation, "phone": phone, "priority": number}
        if len(fields) == 4:
            contact["channels"] = fields[3]
        contacts.append(contact)
    return contacts


def encode_contact(name: str, relation: str, phone: str, channels: str = "") -> str:
    return "/".join([name, relation, phone, channels] if channels else [name, relation, phone])


def encode_contacts(contacts: list[ContactRow]) -> str:
    ordered = sorted(contacts, key=lambda c: c.priority)
    return "; ".join(encode_contact(c.name, c.relation, c.phone, c.channels) for c in ordered)


def encode_conditions(conditions: list[str]) -> str:
    return ";".join(conditions)


class ResidentRow(_Row):
    kind_name: ClassVar[str] = "residents"

    id: Id
    home_id: Id
    name: Name
    sex: Literal["M", "F"]
    birth_date: date
    # GB/T 42195-2022 levels: 0 intact .. 4 complete loss of capacity.
    capacity_level: int = Field(ge=0, le=4)
    living_alone: Flag = False
    conditions: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=60)]], Field(max_length=MAX_CONDITIONS)
    ] = []
    notes: Notes = ""
    phone: LinePhone = ""
    medications: HandoffText = ""
    allergies: HandoffText = ""
    access_notes: HandoffText = ""
    hr_min: HeartRate = None
    hr_max: HeartRate = None
    rr_min: BreathRate = None
    rr_max: BreathRate = None
    contacts: Annotated[list[ContactRow], Field(max_length=MAX_CONTACTS)] = []

    @field_validator("sex", mode="before")
    @classmethod
    def _sex(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"男": "M", "女": "F"}.get(value.strip(), value.strip().upper())
        return value

    @field_validator("conditions", mode="before")
    @classmethod
    def _conditions_cell(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _split(value, CONDITION_SEPARATORS)
        return value

    @field_validator("conditions")
    @classmethod
    def _conditions_encodable(cls, value: list[str]) -> list[str]:
        for item in value:
            _check_text(item, "condition_separator", CONDITION_SEPARATORS)
        return value

    @field_validator("contacts", mode="before")
    @classmethod
    def _contacts_cell(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_contacts(value)
        return value

    @field_validator("contacts")
    @classmethod
    def _contacts_order(cls, value: list[ContactRow]) -> list[ContactRow]:
        priorities = [c.priority for c in value]
        if len(set(priorities)) != len(priorities):
            raise refusal("contacts_share_priority")
        return sorted(value, key=lambda c: c.priority)

    @field_validator("birth_date")
    @classmethod
    def _plausible_birth(cls, value: date) -> date:
        if value < date(1900, 1, 1) or value > date.today():
            raise refusal("birth_date", date=value.isoformat())
        return value

    @model_validator(mode="after")
    def _ranges(self) -> ResidentRow:
        for low, high, what in ((self.hr_min, self.hr_max, "hr"), (self.rr_min, self.rr_max, "rr")):
            if low is not None and high is not None and low >= high:
                raise refusal("range_order", what=what, low=low, high=high)
        return self


class DeviceRow(_Row):
    kind_name: ClassVar[str] = "devices"

    id: Id
    home_id: Id
    kind: DeviceKind
    model: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] = ""
    heartbeat_s: int = Field(ge=10, le=86_400)
    enabled: Flag = True
    # Accepted on import only (factory-provisioned devices); never exported or printed.
    secret: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _default_heartbeat(cls, data: Any) -> Any:
        # Battery sensors and mains hubs report at very different rates, so the default
        # follows the kind. An unknown kind gets a placeholder; its own error is reported.
        if isinstance(data, dict) and data.get("heartbeat_s") in (None, ""):
            kind = _enum_or_none(DeviceKind, data.get("kind"))
            data = {**data, "heartbeat_s": DEFAULT_HEARTBEAT_S[kind] if kind is not None else 60}
        return data

    @field_validator("secret", mode="before")
    @classmethod
    def _blank_secret(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LEN:
            raise refusal("short_secret", min=MIN_SECRET_LEN)
        return value


RegistryRow = StationRow | StaffRow | HomeRow | ResidentRow | DeviceRow

ROW_MODELS: dict[str, type[StationRow | StaffRow | HomeRow | ResidentRow | DeviceRow]] = {
    "stations": StationRow,
    "staff": StaffRow,
    "homes": HomeRow,
    "residents": ResidentRow,
    "devices": DeviceRow,
}

# Columns written on export, in order (``id`` first). Import also accepts ``secret`` for devices.
EXPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    kind: tuple(name for name, info in model.model_fields.items() if not info.exclude)
    for kind, model in ROW_MODELS.items()
}
IMPORT_COLUMNS: dict[str, frozenset[str]] = {
    kind: frozenset(model.model_fields) for kind, model in ROW_MODELS.items()
}

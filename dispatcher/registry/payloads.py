"""Request and response bodies of the registry API (``dispatcher.registry.views``).

Created records are validated with the file-import row models of
``dispatcher.registry.schemas``; the models here are what the API adds: the records as it
answers them, the partial changes a PATCH accepts and the user accounts.
"""

from datetime import date
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from device_gateway.kinds import DeviceKind
from dispatcher.auth.models import Role
from dispatcher.registry.models import Area, StationKind, Tier
from dispatcher.registry.schemas import (
    MAX_CONDITIONS,
    Address,
    BreathRate,
    Channels,
    HandoffText,
    HeartRate,
    Id,
    Lat,
    LinePhone,
    Lon,
    Name,
    Notes,
    OptionalPhone,
    Shifts,
    StaffRole,
    StationName,
)

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RecordOut(_Out):
    """A registry record as the API answers it."""

    id: str


class StationOut(RecordOut):
    id: str
    name: str
    tier: str
    kind: str
    parent_id: str | None
    lat: float
    lon: float
    address: str
    phone: str
    area: str
    timezone: str


class StaffOut(RecordOut):
    id: str
    station_id: str
    name: str
    role: str
    phone: str
    on_duty: bool
    shifts: str = ""
    channels: str = ""


class HomeOut(RecordOut):
    id: str
    station_id: str
    lat: float
    lon: float
    address: str
    area: str
    notes: str
    phone: str = ""


class ContactOut(_Out):
    name: str
    relation: str
    phone: str
    priority: int
    channels: str = ""


class ResidentOut(RecordOut):
    id: str
    home_id: str
    name: str
    sex: str
    birth_date: date | None  # None: not shown to this role (dispatcher.auth.privacy)
    capacity_level: int
    living_alone: bool
    conditions: list[str]
    notes: str
    phone: str = ""
    medications: str = ""
    allergies: str = ""
    access_notes: str = ""
    hr_min: int | None
    hr_max: int | None
    rr_min: int | None
    rr_max: int | None
    contacts: list[ContactOut]


class DeviceOut(RecordOut):
    id: str
    home_id: str
    kind: str
    model: str
    heartbeat_s: int
    enabled: bool


class DeviceWithSecret(DeviceOut):
    # Shown once: only its hash is stored, so a lost secret means re-keying.
    secret: str
    # With Mosquitto (CARECALL_MQTT_ADMIN_URL): why the broker did not take the secret yet;
    # None when it did, or when the broker reads the registry itself (embedded).
    broker_error: str | None = None


class _Patch(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class StationPatch(_Patch):
    name: StationName | None = None
    tier: Tier | None = None
    kind: StationKind | None = None
    parent_id: Id | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    address: Address | None = None
    phone: OptionalPhone | None = None
    area: Area | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] | None = None


class StaffPatch(_Patch):
    station_id: Id | None = None
    name: Name | None = None
    role: StaffRole | None = None
    phone: OptionalPhone | None = None
    on_duty: bool | None = None
    shifts: Shifts | None = None
    channels: Channels | None = None


class HomePatch(_Patch):
    station_id: Id | None = None
    address: Address | None = None
    lat: Lat | None = None
    lon: Lon | None = None
    area: Area | None = None
    notes: Notes | None = None
    phone: LinePhone | None = None


class ResidentPatch(_Patch):
    home_id: Id | None = None
    name: Name | None = None
    sex: Annotated[str, StringConstraints(max_length=8)] | None = None
    birth_date: date | None = None
    capacity_level: Annotated[int, Field(ge=0, le=4)] | None = None
    living_alone: bool | None = None
    conditions: (
        Annotated[list[Annotated[str, StringConstraints(max_length=60)]], Field(max_length=MAX_CONDITIONS)]
        | None
    ) = None
    notes: Notes | None = None
    phone: LinePhone | None = None
    medications: HandoffText | None = None
    allergies: HandoffText | None = None
    access_notes: HandoffText | None = None
    hr_min: HeartRate = None
    hr_max: HeartRate = None
    rr_min: BreathRate = None
    rr_max: BreathRate = None


class DeviceCreate(_Patch):
    id: Id
    home_id: Id
    kind: DeviceKind
    model: Annotated[str, StringConstraints(max_length=64)] | None = None


class DevicePatch(_Patch):
    enabled: bool | None = None
    model: Annotated[str, StringConstraints(max_length=64)] | None = None
    heartbeat_s: Annotated[int, Field(ge=10, le=86_400)] | None = None


Username = Annotated[str, StringConstraints(pattern=r"^[\w.@-]{1,64}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
DisplayName = Annotated[str, StringConstraints(max_length=100)]
Locale = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}(-[A-Za-z]{2})?$")]


class UserCreate(_Patch):
    username: Username
    password: Password
    role: Role
    station_id: Id | None = None
    display_name: DisplayName = ""
    staff_id: Id | None = None
    locale: Locale | None = None


class UserPatch(_Patch):
    password: Password | None = None
    role: Role | None = None
    station_id: Id | None = None
    display_name: DisplayName | None = None
    staff_id: Id | None = None
    active: bool | None = None
    locale: Locale | None = None

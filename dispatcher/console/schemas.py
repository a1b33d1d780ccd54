"""What the console's read endpoints answer (``dispatcher.console.views``)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel


class StationBrief(BaseModel):
    id: str
    name: str
    tier: str
    timezone: str


class ConsoleMe(BaseModel):
    username: str
    display_name: str
    role: str
    locale: str
    station: StationBrief | None
    timezone: str
    outcomes: list[str]
    # An optional tile server for a base map ({z}/{x}/{y}); None = the map is drawn alone.
    tile_url: str | None


class ContactInfo(BaseModel):
    name: str
    relation: str
    phone: str
    priority: int


class ResidentInfo(BaseModel):
    id: str
    name: str
    sex: str
    age: int
    birth_date: date | None
    capacity_level: int
    living_alone: bool
    conditions: list[str]
    notes: str
    # the resident's own mobile ("" none); personal data: only roles that handle calls
    phone: str
    # read out in a hand-off to 120/110/119
    medications: str
    allergies: str
    access_notes: str
    hr_range: tuple[int, int]
    rr_range: tuple[int, int]
    contacts: list[ContactInfo]


class DeviceInfo(BaseModel):
    id: str
    kind: str
    model: str
    enabled: bool
    online: bool | None
    battery_pct: float | None
    last_seen_at: datetime | None
    fired: bool
    # which sensor behind a hub fired, when the device said
    fired_sensors: list[str]
    metrics: dict[str, Any]
    metrics_at: datetime | None


class TrendPoint(BaseModel):
    at: datetime
    hr: float | None
    rr: float | None
    source: str  # "telemetry" (per-minute history), "event" (a vital alert) or "latest"


class ResponderState(BaseModel):
    staff_id: str
    name: str
    role: str
    phone: str
    station_id: str
    station_name: str
    # free, or the assignment state (dispatched, en_route, on_scene) …
    state: str
    # … on which call (None when free)
    call_id: int | None


class MapStation(BaseModel):
    id: str
    name: str
    tier: str
    lat: float
    lon: float


class MapData(BaseModel):
    home: dict[str, Any]
    target: dict[str, float]  # where help must go: the home, or where a watch said
    station_id: str | None
    stations: list[MapStation]
    area: str
    limit_min: float
    # the service circle as a straight-line radius: limit × speed ÷ road factor
    reach_km: float


class CallContext(BaseModel):
    call_id: int
    home_id: str
    address: str
    home_notes: str
    # the home's fixed line ("" none), rung back first; "" for roles that do not handle calls
    home_phone: str
    resident: ResidentInfo | None
    devices: list[DeviceInfo]
    trend: list[TrendPoint]
    responders: list[ResponderState]
    map: MapData


class CandidateRow(BaseModel):
    """One person the send dialog lists (dispatcher.calls.ranking), in its order."""

    staff_id: str
    name: str
    role: str
    phone: str
    station_id: str
    station_name: str
    distance_m: int
    eta_s: int
    state: str  # free, busy, off_duty
    reasons: list[str]
    call_id: int | None


class BoardRow(BaseModel):
    id: str
    name: str
    tier: str
    parent_id: str | None
    staff_on_duty: int
    busy: int
    free: int
    open_calls: int

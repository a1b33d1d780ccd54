"""What the orders API reads and answers: bookings, actions, providers, orders."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from device_gateway.protocol.messages import SERVICE_KINDS
from dispatcher.orders.hours import parse_hours

__all__ = ["ActionIn", "BookingIn", "OrderOut", "ProviderIn", "ProviderOut", "TimelineEntry"]

_Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


def _kind(v: str) -> str:
    if v not in SERVICE_KINDS:
        raise ValueError(f"unknown kind {v!r}; one of {', '.join(sorted(SERVICE_KINDS))}")
    return v


class BookingIn(BaseModel):
    """A booking: from an operator taking a phone call, or from another system."""

    model_config = ConfigDict(extra="forbid")
    resident_id: _Id
    kind: str
    booked_for: AwareDatetime | None = Field(
        default=None, description="when the service is wanted; none: now"
    )
    notes: str = Field(default="", max_length=2000)
    client_ref: str | None = Field(
        default=None, min_length=1, max_length=100, description="the booking system's own reference"
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return _kind(v)


class ActionIn(BaseModel):
    """An action's inputs; each action reads the fields it needs."""

    model_config = ConfigDict(extra="forbid")
    provider_id: _Id | None = None
    station_id: _Id | None = None
    staff_id: _Id | None = None
    notes: str | None = Field(default=None, max_length=2000)
    note: str | None = Field(default=None, max_length=2000)
    reason: str | None = Field(default=None, max_length=2000)
    satisfaction: int | None = None
    not_done: bool | None = None


class ProviderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    radius_km: float | None = Field(default=None, gt=0, le=500, allow_inf_nan=False)
    stations: list[_Id] = Field(default_factory=list, max_length=500)
    hours: str = Field(default="24h", max_length=300)
    kinds: list[str] = Field(min_length=1, max_length=len(SERVICE_KINDS))
    capacity: int = Field(default=1, ge=1, le=10_000)
    manager_name: str = Field(default="", max_length=100)
    manager_phone: str = Field(default="", max_length=40, pattern=r"^[0-9+() -]*$")
    active: bool = True

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        parse_hours(v)  # ValueError names the problem
        return v.strip()

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: list[str]) -> list[str]:
        return sorted({_kind(k) for k in v})

    @model_validator(mode="after")
    def _area(self) -> Self:
        if self.radius_km is None and not self.stations:
            raise ValueError("a provider needs an area: radius_km, stations, or both")
        return self


class ProviderOut(ProviderIn):
    model_config = ConfigDict(extra="forbid", from_attributes=True)
    id: str
    created_at: datetime


class ProviderCreate(ProviderIn):
    id: _Id


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    status: str
    resident_id: str
    home_id: str
    station_id: str
    provider_id: str | None
    assignee_station_id: str | None
    staff_id: str | None
    source: str
    client_ref: str | None
    device_id: str | None
    event_id: str | None
    visit_id: int | None
    booked_for: datetime | None
    request_notes: str
    levels: dict[str, Any]
    price_cny: float
    subsidised: bool
    route_reasons: list[Any]
    created_at: datetime
    created_by: str
    assigned_at: datetime | None
    accepted_at: datetime | None
    started_at: datetime | None
    done_at: datetime | None
    duration_s: int | None
    done_notes: str
    confirmed_at: datetime | None
    satisfaction: int | None
    not_done: bool
    confirm_note: str
    closed_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str
    breached: list[str]
    version: int


class TimelineEntry(BaseModel):
    """One ``order_*`` audit row of an order, as the console's timeline shows it: the
    step, when, who, and its detail without phone numbers (dispatcher.orders.timeline)."""

    seq: int
    kind: str
    at: datetime
    actor: str
    detail: dict[str, Any]

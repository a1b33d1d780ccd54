"""The service catalogue (config/services.yaml) as validated values: which kinds exist,
who offers each, what it costs and its service levels. Pure: no file is read here (see
dispatcher/orders/catalogue_file.py)."""

from __future__ import annotations

from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from device_gateway.protocol.messages import SERVICE_KINDS

__all__ = [
    "SERVICE_KINDS",
    "BreachPages",
    "Catalogue",
    "CatalogueError",
    "KindEntry",
    "OfferedBy",
    "ServiceLevels",
]

_ID = Field(min_length=1, max_length=64)


class CatalogueError(ValueError):
    """config/services.yaml cannot be used; the message names the file and the key."""


class ServiceLevels(BaseModel):
    """How fast an order of a kind must move. ``start_by_s`` counts from the order's
    creation; an order booked for a time must start by that time instead (plus
    ``start_grace_s``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    accept_within_s: int = Field(gt=0, le=7 * 86400)
    start_by_s: int = Field(gt=0, le=30 * 86400)
    start_grace_s: int = Field(default=900, ge=0, le=86400)
    done_within_s: int = Field(gt=0, le=7 * 86400)

    def snapshot(self) -> dict[str, int]:
        """Frozen onto an order when it is created: editing the file never moves the
        deadlines of an order already running."""
        return self.model_dump()


class OfferedBy(BaseModel):
    """Who offers a kind: station ids and provider ids; ``"*"`` means every station
    (community tier) / every active provider whose own kinds list the kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stations: list[str] = Field(default_factory=list, max_length=500)
    providers: list[str] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if not self.stations and not self.providers:
            raise ValueError("offered_by needs at least one station or provider ('*' for all)")
        for name in (*self.stations, *self.providers):
            if not name or len(name) > 64:
                raise ValueError(f"bad id {name!r} in offered_by")
        return self

    def station_offers(self, station_id: str) -> bool:
        return "*" in self.stations or station_id in self.stations

    def provider_offers(self, provider_id: str) -> bool:
        return "*" in self.providers or provider_id in self.providers


class KindEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name_zh: str = Field(min_length=1, max_length=40)
    name_en: str = Field(min_length=1, max_length=40)
    offered_by: OfferedBy
    price_cny: float = Field(ge=0, le=100_000, allow_inf_nan=False)
    unit: Literal["visit", "hour", "meal", "trip"] = "visit"
    subsidised: bool = False
    levels: ServiceLevels


class BreachPages(BaseModel):
    """Who is paged when an order misses a level (dispatcher/orders/breaches.py): first
    the provider's manager (the station's managers for a station's own order); when the
    order is still not back within that level ``station_after_s`` after it fell due, the
    station that holds the order."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    station_after_s: int = Field(default=1800, gt=0, le=7 * 86400)


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    timezone: str = "Asia/Shanghai"
    breach_pages: BreachPages = BreachPages()
    # stations have no opening hours or capacity of their own in the registry
    station_capacity: int = Field(default=3, ge=1, le=1000)
    station_radius_km: float = Field(default=5.0, gt=0, le=500, allow_inf_nan=False)
    kinds: dict[str, KindEntry]

    @model_validator(mode="before")
    @classmethod
    def _drop_anchors(cls, data: Any) -> Any:
        # top-level "x-" keys hold YAML anchors shared between kinds (the compose-file
        # convention, as in config/escalation.yaml): not settings, not unknown keys
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
        return data

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @field_validator("kinds")
    @classmethod
    def _every_kind(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - SERVICE_KINDS)
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; the protocol's kinds are {sorted(SERVICE_KINDS)}")
        missing = sorted(SERVICE_KINDS - set(v))
        if missing:
            # a device may send any protocol kind: each must route somewhere
            raise ValueError(f"missing kinds {missing}: every protocol kind needs an entry")
        return v

    def entry(self, kind: str) -> KindEntry:
        try:
            return self.kinds[kind]
        except KeyError:
            raise CatalogueError(f"unknown service kind {kind!r}") from None

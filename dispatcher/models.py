"""ORM tables of the registry (stations, staff, homes, residents, contacts, devices) and of
the device side of the record (stored events, rejected messages, device state).

Schema changes go through Alembic (dispatcher/migrations); never ``create_all`` outside
tests of migrations themselves.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dispatcher.db import Base, UTCDateTime

ID = String(64)


class Tier(StrEnum):
    county = "county"
    street = "street"
    community = "community"


class StationKind(StrEnum):
    county_centre = "county_centre"
    street_centre = "street_centre"
    day_care_centre = "day_care_centre"
    community_station = "community_station"
    home_care_point = "home_care_point"
    village_point = "village_point"


TIER_OF_KIND: dict[StationKind, Tier] = {
    StationKind.county_centre: Tier.county,
    StationKind.street_centre: Tier.street,
    StationKind.day_care_centre: Tier.community,
    StationKind.community_station: Tier.community,
    StationKind.home_care_point: Tier.community,
    StationKind.village_point: Tier.community,
}


class Area(StrEnum):
    urban = "urban"
    rural = "rural"


class DeviceKind(StrEnum):
    hub = "hub"
    button = "button"
    watch = "watch"
    radar = "radar"
    mattress = "mattress"
    smoke = "smoke"
    gas = "gas"
    water = "water"
    door = "door"


# Default heartbeat per kind (seconds): mains-powered hubs/radars report often, battery
# sensors rarely (PROTOCOL.md "Supervision").
DEFAULT_HEARTBEAT_S: dict[DeviceKind, int] = {
    DeviceKind.hub: 60,
    DeviceKind.radar: 60,
    DeviceKind.mattress: 60,
    DeviceKind.watch: 300,
    DeviceKind.button: 4 * 3600,
    DeviceKind.smoke: 4 * 3600,
    DeviceKind.gas: 4 * 3600,
    DeviceKind.water: 4 * 3600,
    DeviceKind.door: 4 * 3600,
}


class Station(Base):
    __tablename__ = "stations"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    parent_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("stations.id", ondelete="RESTRICT"), index=True
    )
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(String(300), default="")
    phone: Mapped[str] = mapped_column(String(40), default="")
    area: Mapped[str] = mapped_column(String(16), default=Area.urban.value)
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")

    staff: Mapped[list[Staff]] = relationship(back_populates="station", cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint("tier in ('county','street','community')", name="tier"),
        CheckConstraint("lat between -90 and 90 and lon between -180 and 180", name="latlon"),
    )


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    station_id: Mapped[str] = mapped_column(ID, ForeignKey("stations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(32))  # operator, responder, nurse, doctor, manager
    phone: Mapped[str] = mapped_column(String(40), default="")
    on_duty: Mapped[bool] = mapped_column(Boolean, default=False)

    station: Mapped[Station] = relationship(back_populates="staff")


class Home(Base):
    __tablename__ = "homes"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    station_id: Mapped[str] = mapped_column(ID, ForeignKey("stations.id", ondelete="RESTRICT"), index=True)
    address: Mapped[str] = mapped_column(String(300))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    area: Mapped[str] = mapped_column(String(16), default=Area.urban.value)
    notes: Mapped[str] = mapped_column(Text, default="")

    residents: Mapped[list[Resident]] = relationship(back_populates="home")
    devices: Mapped[list[Device]] = relationship(back_populates="home")


class Resident(Base):
    __tablename__ = "residents"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    home_id: Mapped[str] = mapped_column(ID, ForeignKey("homes.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    sex: Mapped[str] = mapped_column(String(1))  # M / F
    birth_date: Mapped[date] = mapped_column(Date)
    capacity_level: Mapped[int] = mapped_column(Integer)  # GB/T 42195-2022, 0 intact .. 4 complete loss
    living_alone: Mapped[bool] = mapped_column(Boolean, default=False)
    conditions: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[str] = mapped_column(Text, default="")
    # Vital-sign ranges; NULL = default for the capacity level (device_gateway.rules).
    hr_min: Mapped[int | None] = mapped_column(Integer)
    hr_max: Mapped[int | None] = mapped_column(Integer)
    rr_min: Mapped[int | None] = mapped_column(Integer)
    rr_max: Mapped[int | None] = mapped_column(Integer)

    home: Mapped[Home] = relationship(back_populates="residents")
    contacts: Mapped[list[Contact]] = relationship(
        back_populates="resident", cascade="all, delete-orphan", order_by="Contact.priority"
    )

    __table_args__ = (
        CheckConstraint("capacity_level between 0 and 4", name="capacity_level"),
        CheckConstraint("sex in ('M','F')", name="sex"),
    )


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resident_id: Mapped[str] = mapped_column(ID, ForeignKey("residents.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    relation: Mapped[str] = mapped_column(String(40))
    phone: Mapped[str] = mapped_column(String(40))
    priority: Mapped[int] = mapped_column(Integer, default=1)  # 1 = call first

    resident: Mapped[Resident] = relationship(back_populates="contacts")


class Device(Base):
    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    home_id: Mapped[str] = mapped_column(ID, ForeignKey("homes.id", ondelete="RESTRICT"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64), default="")
    heartbeat_s: Mapped[int] = mapped_column(Integer, default=60)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Mosquitto-compatible PBKDF2-SHA512 hash ($7$...) so broker-config can write the
    # password file without ever knowing the secret. NULL = never issued.
    secret_hash: Mapped[str | None] = mapped_column(String(256))
    # A load generator may publish on behalf of other devices (issue "Proof").
    privileged: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rekeyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    home: Mapped[Home] = relationship(back_populates="devices")


class DeviceEvent(Base):
    """One stored device event. (device_id, event_id) is unique: resends are the same event."""

    __tablename__ = "device_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ID, ForeignKey("devices.id", ondelete="RESTRICT"))
    event_id: Mapped[str] = mapped_column(String(64))
    home_id: Mapped[str] = mapped_column(ID, index=True)
    type: Mapped[str] = mapped_column(String(64))  # as sent; unknown types kept raw
    event_class: Mapped[str] = mapped_column(String(16))  # emergency urgent info test trouble cancel
    sensor: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(16), default="device")  # device, rule, supervision
    device_ts: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    clock_skew_s: Mapped[float | None] = mapped_column(Float)
    clock_suspect: Mapped[bool] = mapped_column(Boolean, default=False)
    gateway: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (UniqueConstraint("device_id", "event_id", name="uq_device_events_device_event"),)


class RejectedMessage(Base):
    """A message the gateway could not accept, kept truncated for inspection."""

    __tablename__ = "rejected_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    device_id: Mapped[str | None] = mapped_column(String(64))  # as claimed by the topic
    topic: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(500))
    payload_size: Mapped[int] = mapped_column(Integer)
    payload_excerpt: Mapped[str] = mapped_column(Text)  # repr of the first bytes

    __table_args__ = (Index("ix_rejected_device_reason", "device_id", "reason"),)


class DeviceState(Base):
    """Fast-changing device facts, flushed by the gateway in batches."""

    __tablename__ = "device_state"

    device_id: Mapped[str] = mapped_column(ID, ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    # When it last went offline; kept after it returns (``online`` says which holds), so
    # the restore event can say how long it was away.
    offline_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # last_seen + offline_after_intervals × heartbeat: the supervision sweep is one
    # indexed, set-based UPDATE over this column, however many devices there are.
    offline_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_test_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    battery_pct: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    metrics_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

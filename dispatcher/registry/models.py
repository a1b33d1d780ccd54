"""Registry tables: stations, staff, homes, residents and contacts.

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from carecall.core.db import ID, Base


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
    # A responder's own "busy" (on duty but not to be paged); see dispatcher/paging.
    busy: Mapped[bool] = mapped_column(Boolean, default=False)
    # The roster: names of the shifts (config/oversight.yaml) this person works,
    # space-separated ("day night"). on_duty says who is there now; shifts say who is
    # planned, so coverage can be read per shift.
    shifts: Mapped[str] = mapped_column(String(200), default="", server_default="")
    # This person's own channel order for pages and notices, space-separated
    # ("app sms voice"); empty = the purpose's order in the notifications file.
    channels: Mapped[str] = mapped_column(String(100), default="", server_default="")

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
    # The home's fixed line (座机), called back first; "" when there is none.
    phone: Mapped[str] = mapped_column(String(40), default="", server_default="")

    residents: Mapped[list[Resident]] = relationship(back_populates="home")


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
    # The resident's own mobile; "" when there is none (the home's line is on the home).
    phone: Mapped[str] = mapped_column(String(40), default="", server_default="")
    # Read out to 120/110/119 in a hand-off: free text, as a nurse would write it.
    medications: Mapped[str] = mapped_column(Text, default="", server_default="")
    allergies: Mapped[str] = mapped_column(Text, default="", server_default="")
    # How to get in: key safe code location, who holds keys, dog, stairs.
    access_notes: Mapped[str] = mapped_column(Text, default="", server_default="")
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
    # This contact's own channel order ("sms voice"); empty = the family purpose's order.
    channels: Mapped[str] = mapped_column(String(100), default="", server_default="")

    resident: Mapped[Resident] = relationship(back_populates="contacts")

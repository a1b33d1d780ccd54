"""Mass-offline incidents and the devices folded into each.

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import ID, Base, UTCDateTime


class MassOfflineIncident(Base):
    """A call of class ``mass_offline``: many devices of one area offline at once
    (dispatcher.incidents). The call carries status, station and escalation like any
    other; this row says which area, and why."""

    __tablename__ = "mass_offline_incidents"

    call_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("calls.id", ondelete="RESTRICT"), primary_key=True
    )
    area_station_id: Mapped[str] = mapped_column(
        ID, ForeignKey("stations.id", ondelete="RESTRICT"), index=True
    )
    cause: Mapped[str] = mapped_column(String(32))  # broker_restart, mass_offline
    outage_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("broker_outages.id", ondelete="SET NULL")
    )
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # offline events received from here on, in the area, belong to it (per-home calls
    # about them are folded in)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    # the latest offline event taken in: the cluster is still going while new ones come
    # within mass_offline.window_s of it
    last_offline_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IncidentDevice(Base):
    """One device of a mass offline incident: when it went, when it came back."""

    __tablename__ = "incident_devices"

    call_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("mass_offline_incidents.call_id", ondelete="RESTRICT"), primary_key=True
    )
    device_id: Mapped[str] = mapped_column(
        ID, ForeignKey("devices.id", ondelete="RESTRICT"), primary_key=True
    )
    home_id: Mapped[str] = mapped_column(ID)
    offline_event_pk: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    offline_at: Mapped[datetime] = mapped_column(UTCDateTime)
    back_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    restore_event_pk: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    # the per-home trouble call folded into the incident for this device, if any
    merged_call_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index("ix_incident_devices_device", "device_id", "back_at"),)

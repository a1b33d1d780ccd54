"""Providers (服务商) and service orders (派单).

Orders live apart from calls on purpose: the emergency queue reads the ``calls`` table
only, so an order can never appear in it or outrank an emergency. Every step of an order
is also a row of the audit log (kinds ``order_*``, the order id in ``detail``).

Schema changes go through Alembic (carecall/core/migrations, revisions 0013, 0015 and
0016).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import ID, Base, UTCDateTime


class Provider(Base):
    """An outside service provider: where it is, which homes it serves (within
    ``radius_km`` of its base, or of the listed ``stations``), when it is open, what it
    offers and how many orders it can hold at once."""

    __tablename__ = "providers"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    radius_km: Mapped[float | None] = mapped_column(Float)
    stations: Mapped[list[str]] = mapped_column(JSON, default=list)
    hours: Mapped[str] = mapped_column(String(300), default="24h")  # dispatcher.orders.hours
    kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    manager_name: Mapped[str] = mapped_column(String(100), default="")
    manager_phone: Mapped[str] = mapped_column(String(40), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Order(Base):
    """One service order, from booking to closing (dispatcher.orders.lifecycle)."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="created")
    resident_id: Mapped[str] = mapped_column(ID, ForeignKey("residents.id", ondelete="RESTRICT"), index=True)
    home_id: Mapped[str] = mapped_column(ID, ForeignKey("homes.id", ondelete="RESTRICT"))
    # the home's own station: whose scope sees the order
    station_id: Mapped[str] = mapped_column(ID, ForeignKey("stations.id", ondelete="RESTRICT"))
    provider_id: Mapped[str | None] = mapped_column(ID, ForeignKey("providers.id", ondelete="RESTRICT"))
    assignee_station_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("stations.id", ondelete="RESTRICT")
    )
    staff_id: Mapped[str | None] = mapped_column(ID, ForeignKey("staff.id", ondelete="SET NULL"), index=True)
    source: Mapped[str] = mapped_column(String(16))  # device operator api visit
    # the welfare visit whose form opened the order (source "visit"), else none
    visit_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("visits.id", ondelete="SET NULL"))
    # the idempotency key (header) or the booking system's own reference
    client_ref: Mapped[str | None] = mapped_column(String(100), unique=True)
    device_id: Mapped[str | None] = mapped_column(ID)
    event_id: Mapped[str | None] = mapped_column(String(64))
    booked_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    request_notes: Mapped[str] = mapped_column(Text, default="")
    levels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # ServiceLevels snapshot
    price_cny: Mapped[float] = mapped_column(Float, default=0.0)
    subsidised: Mapped[bool] = mapped_column(Boolean, default=False)
    route_reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(100))
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[int | None] = mapped_column(Integer)
    done_notes: Mapped[str] = mapped_column(Text, default="")
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    satisfaction: Mapped[int | None] = mapped_column(Integer)
    not_done: Mapped[bool] = mapped_column(Boolean, default=False)
    confirm_note: Mapped[str] = mapped_column(Text, default="")
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_reason: Mapped[str] = mapped_column(Text, default="")
    breached: Mapped[list[str]] = mapped_column(JSON, default=list)  # levels breached
    # breached levels whose second page (the station holding the order) went out
    breach_escalated: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    version: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_orders_station_status", "station_id", "status"),
        Index("ix_orders_provider_status", "provider_id", "status"),
        Index("ix_orders_status_created", "status", "created_at"),
        # one order per visit and kind (a form saved twice never opens two); serves the
        # visit's lookup of its orders too
        UniqueConstraint("visit_id", "kind"),
    )

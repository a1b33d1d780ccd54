"""Welfare visits: residents' special-difficulty categories, visit plans and visits.

Schema changes go through Alembic (carecall/core/migrations, revision 0014).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import ID, Base, UTCDateTime

__all__ = ["ResidentCategory", "Seen", "Visit", "VisitPlan", "VisitStatus"]


class VisitStatus(StrEnum):
    due = "due"
    late = "late"  # open, past its due time
    missed = "missed"  # open, past due + the policy's grace; may still be done (late)
    done = "done"
    cancelled = "cancelled"


OPEN_STATUSES = (VisitStatus.due.value, VisitStatus.late.value, VisitStatus.missed.value)


class Seen(StrEnum):
    in_person = "in_person"
    by_phone = "by_phone"


class ResidentCategory(Base):
    """A resident's special-difficulty group (dispatcher.visits.rules.Category); the
    registry's ``living_alone`` flag counts as ``living_alone`` without a row here."""

    __tablename__ = "resident_categories"

    resident_id: Mapped[str] = mapped_column(
        ID, ForeignKey("residents.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(String(32), primary_key=True)


class VisitPlan(Base):
    """A resident's standing reason to be visited; ``key`` is unique per resident and reason."""

    __tablename__ = "visit_plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    resident_id: Mapped[str] = mapped_column(ID, ForeignKey("residents.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(String(48))
    frequency: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[int | None] = mapped_column(Integer)
    anchor: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("frequency in ('monthly','weekly','once')", name="frequency"),)


class Visit(Base):
    """One due visit of one plan for one period, and what the visitor recorded."""

    __tablename__ = "visits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    plan_id: Mapped[int] = mapped_column(Integer, ForeignKey("visit_plans.id", ondelete="CASCADE"))
    period: Mapped[str] = mapped_column(String(32))
    resident_id: Mapped[str] = mapped_column(ID, ForeignKey("residents.id", ondelete="CASCADE"), index=True)
    station_id: Mapped[str] = mapped_column(ID, ForeignKey("stations.id", ondelete="RESTRICT"))
    staff_id: Mapped[str | None] = mapped_column(ID, ForeignKey("staff.id", ondelete="SET NULL"))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=VisitStatus.due.value)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)  # 0, 1 manager, 2 street
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    checkin_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checkin_lat: Mapped[float | None] = mapped_column(Float)
    checkin_lon: Mapped[float | None] = mapped_column(Float)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_by: Mapped[str | None] = mapped_column(String(100))
    seen: Mapped[str | None] = mapped_column(String(16))
    health: Mapped[str] = mapped_column(Text, default="")
    living_conditions: Mapped[str] = mapped_column(Text, default="")
    needs_found: Mapped[str] = mapped_column(Text, default="")
    follow_up_needed: Mapped[bool] = mapped_column(Boolean, default=False)
    # a hook for the service-orders domain: the kind of order the visitor asks for
    requested_service_kind: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[str] = mapped_column(Text, default="")
    cancel_reason: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        UniqueConstraint("plan_id", "period", name="uq_visits_plan_period"),
        Index("ix_visits_station_due", "station_id", "due_at"),
        Index("ix_visits_status_due", "status", "due_at"),
        CheckConstraint(
            "status in ({})".format(",".join(f"'{s.value}'" for s in VisitStatus)), name="status"
        ),
        CheckConstraint("seen is null or seen in ('in_person','by_phone')", name="seen"),
    )

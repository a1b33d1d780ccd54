"""Call tables: calls, their timeline, intake bookkeeping, assignments and timers.

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import ID, Base, UTCDateTime
from dispatcher.calls.lifecycle import CLOSED_STATUSES, OPEN_STATUSES, CallStatus

__all__ = [
    "CLOSED_STATUSES",
    "OPEN_STATUSES",
    "Assignment",
    "Call",
    "CallEvent",
    "CallStatus",
    "EventIntake",
    "FailureKind",
    "IntakeFailure",
    "Timer",
    "TimerStatus",
]

# =========================================================================== dispatch


class TimerStatus(StrEnum):
    pending = "pending"
    firing = "firing"  # taken by a dispatcher copy, inside its transaction
    fired = "fired"
    stale = "stale"  # came due when it no longer meant anything
    cancelled = "cancelled"
    failed = "failed"  # set aside after failing (dispatcher/calls/failures.py)


class FailureKind(StrEnum):
    """What an ``intake_failures`` row is about."""

    event = "event"
    timer = "timer"


class Call(Base):
    """One emergency / urgent / trouble call: the unit operators answer and supervisors audit.

    Times (opened, acknowledged, resolved …) are not stored here: they are derived from
    the audit log, the only record of what happened when.
    """

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    priority: Mapped[str] = mapped_column(String(2))
    priority_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    event_class: Mapped[str] = mapped_column(String(16))
    home_id: Mapped[str] = mapped_column(ID, ForeignKey("homes.id", ondelete="RESTRICT"), index=True)
    resident_id: Mapped[str | None] = mapped_column(ID, ForeignKey("residents.id", ondelete="SET NULL"))
    station_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("stations.id", ondelete="RESTRICT"), index=True
    )
    tier: Mapped[str | None] = mapped_column(String(16))
    route_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    # where help must go: the home, or where a watch said the resident is
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(32))
    # the escalation policy as it was when the call opened (editing policies never
    # changes a running call)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)  # 0 own, 1 street, 2 county
    # which escalation chain is live; a timer of an older generation is stale
    generation: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[int] = mapped_column(Integer, default=1)
    last_event_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(
            "status in ({})".format(",".join(f"'{s.value}'" for s in CallStatus)),
            name="status",
        ),
        Index("ix_calls_home_status", "home_id", "status"),
    )


class CallEvent(Base):
    """Which stored device events belong to which call (an event joins exactly one)."""

    __tablename__ = "call_events"

    event_pk: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("device_events.id", ondelete="RESTRICT"),
        primary_key=True,
    )
    call_id: Mapped[int] = mapped_column(Integer, ForeignKey("calls.id", ondelete="RESTRICT"), index=True)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EventIntake(Base):
    """Each stored event the dispatcher has handled (opened a call, joined one, or
    decided it needs none). Absence = still to do; the primary key makes it once-only."""

    __tablename__ = "event_intake"

    event_pk: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("device_events.id", ondelete="RESTRICT"),
        primary_key=True,
    )
    decision: Mapped[str] = mapped_column(String(32))  # opened joined cancelled noted restored ignored failed
    call_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("calls.id", ondelete="RESTRICT"))
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    handled_by: Mapped[str] = mapped_column(String(64), default="")


class IntakeFailure(Base):
    """A stored event or a due timer whose handling failed (a bug or bad data, not an
    unavailable database). ``attempts`` counts failures across every dispatcher copy and
    restart; at the limit the item is set aside (``set_aside_at``): the event gets an
    ``event_intake`` row with decision ``failed``, the timer status ``failed``, and both are
    listed for operators as "could not be processed" until an admin puts them back."""

    __tablename__ = "intake_failures"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # event | timer
    ref: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    set_aside_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_by: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (Index("ix_intake_failures_due", "kind", "set_aside_at", "next_attempt_at"),)


class Assignment(Base):
    """A responder sent to a call."""

    __tablename__ = "assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(Integer, ForeignKey("calls.id", ondelete="RESTRICT"), index=True)
    staff_id: Mapped[str] = mapped_column(ID, ForeignKey("staff.id", ondelete="RESTRICT"), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    state: Mapped[str] = mapped_column(
        String(16), default="dispatched"
    )  # dispatched en_route on_scene released


class Timer(Base):
    """A due escalation step. Lives in the database so it survives every restart; claimed
    with row locks (SKIP LOCKED on PostgreSQL) so exactly one dispatcher copy fires it."""

    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(Integer, ForeignKey("calls.id", ondelete="RESTRICT"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(
        String(16), default="pending"
    )  # pending firing fired stale cancelled failed
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fired_by: Mapped[str | None] = mapped_column(String(64))
    repeat: Mapped[int] = mapped_column(Integer, default=0)  # nth repetition of a reminder

    __table_args__ = (Index("ix_timers_pending_due", "status", "due_at"),)

"""Outgoing notifications (the outbox).

Schema changes go through Alembic (carecall/core/migrations, revision 0016: a row is about
a call, an order or a visit).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from carecall.core.db import Base, UTCDateTime


class NotificationStatus(StrEnum):
    """Where an outbox row stands: waiting (first try or a retry), delivered, given up."""

    pending = "pending"
    sent = "sent"
    failed = "failed"


# The outbox channel of device acks: published over MQTT by a dispatcher, not a notifier.
DEVICE_ACK_CHANNEL = "mqtt"


# exactly one of call_id, order_id, visit_id (portable SQL: no boolean arithmetic on PostgreSQL)
ONE_SUBJECT = (
    "(call_id IS NOT NULL AND order_id IS NULL AND visit_id IS NULL)"
    " OR (call_id IS NULL AND order_id IS NOT NULL AND visit_id IS NULL)"
    " OR (call_id IS NULL AND order_id IS NULL AND visit_id IS NOT NULL)"
)


class Notification(Base):
    """Outbox of notifications (station alert, reminder, contacts, supervisor). Sent by a
    notifier plugin, retried with backoff, recorded; never blocks the call.

    A notification is about exactly one thing: a call (``call_id``), a service order's
    missed level (``order_id``, dispatcher/orders/breaches.py) or a missed welfare visit
    (``visit_id``, dispatcher/visits/generation.py). The outbox delivers call rows first
    when both wait (dispatcher/engine/outbox_loop.py): an order or a visit never takes an
    emergency's place."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("calls.id", ondelete="RESTRICT"), index=True
    )
    order_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("orders.id", ondelete="RESTRICT"), index=True
    )
    visit_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("visits.id", ondelete="RESTRICT"), index=True
    )
    channel: Mapped[str] = mapped_column(String(32))  # DEVICE_ACK_CHANNEL, or a notifier: log, webhook …
    purpose: Mapped[str] = mapped_column(String(32))  # alert_station, remind, notify_contact …
    target: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=NotificationStatus.pending.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # the pending rows only (the outbox and the stall monitor read them; sent rows are history)
    __table_args__ = (
        CheckConstraint(
            ONE_SUBJECT,
            name="one_subject",
        ),
        Index(
            "ix_notifications_pending",
            "channel",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

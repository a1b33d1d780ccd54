"""Outgoing notifications (the outbox).

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
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


class Notification(Base):
    """Outbox of notifications (station alert, reminder, contacts, supervisor). Sent by a
    notifier plugin, retried with backoff, recorded; never blocks the call."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(Integer, ForeignKey("calls.id", ondelete="RESTRICT"), index=True)
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
        Index(
            "ix_notifications_pending",
            "channel",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

"""Tables the device gateway writes: devices, stored device events, rejected messages,
device state and the gateway's own broker outages. The edge owns the device record.

Schema changes go through Alembic (carecall/core/migrations).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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


class DeviceEvent(Base):
    """One stored device event. (device_id, event_id) is unique: resends are the same event."""

    __tablename__ = "device_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
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

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    device_id: Mapped[str | None] = mapped_column(String(64))  # as claimed by the topic
    topic: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(500))
    payload_size: Mapped[int] = mapped_column(Integer)
    payload_excerpt: Mapped[str] = mapped_column(Text)  # repr of the first bytes
    # How many rejected messages this row stands for: 1, or, for a summary row of a
    # rate-limited flood (device_gateway/limits.py), the number suppressed. Count with SUM.
    messages: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

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
    # Recent heart and breathing rate, one point a minute at most, newest last:
    # [[epoch_ms, hr, rr], …] (the console's trend; the full stream is not kept).
    vitals_trend: Mapped[list[list[float | None]] | None] = mapped_column(JSON(none_as_null=True))


# =========================================================================== mass offline


class BrokerOutage(Base):
    """A gateway copy's broker connection lost and regained (device_gateway.outages): the
    platform's own observation that the broker went away, so the wills it published
    are read as one "broker restart" and not as hundreds of homes in trouble."""

    __tablename__ = "broker_outages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gateway: Mapped[str] = mapped_column(String(64))
    lost_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    back_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

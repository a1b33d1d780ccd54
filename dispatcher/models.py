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
    # The roster: names of the shifts (config/oversight.yaml) this person works,
    # space-separated ("day night"). on_duty says who is there now; shifts say who is
    # planned, so coverage can be read per shift.
    shifts: Mapped[str] = mapped_column(String(200), default="", server_default="")

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


# =========================================================================== dispatch


class CallStatus(StrEnum):
    open = "open"
    assigned = "assigned"
    acknowledged = "acknowledged"
    dispatched = "dispatched"
    en_route = "en_route"
    on_scene = "on_scene"
    resolved = "resolved"
    cancelled = "cancelled"


OPEN_STATUSES = (
    CallStatus.open,
    CallStatus.assigned,
    CallStatus.acknowledged,
    CallStatus.dispatched,
    CallStatus.en_route,
    CallStatus.on_scene,
)
CLOSED_STATUSES = (CallStatus.resolved, CallStatus.cancelled)


class Role(StrEnum):
    operator = "operator"
    supervisor = "supervisor"
    admin = "admin"


class User(Base):
    """A console login. Scope = the station and everything under it (admin: all)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[str] = mapped_column(String(16))
    station_id: Mapped[str | None] = mapped_column(ID, ForeignKey("stations.id", ondelete="RESTRICT"))
    staff_id: Mapped[str | None] = mapped_column(ID, ForeignKey("staff.id", ondelete="SET NULL"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    locale: Mapped[str] = mapped_column(String(8), default="zh-CN")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("role in ('operator','supervisor','admin')", name="role"),)


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
            "status in ('open','assigned','acknowledged','dispatched','en_route','on_scene','resolved','cancelled')",
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
    decision: Mapped[str] = mapped_column(String(32))  # opened, joined, cancelled, noted, restored, ignored
    call_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("calls.id", ondelete="RESTRICT"))
    handled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    handled_by: Mapped[str] = mapped_column(String(64), default="")


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
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending fired stale cancelled
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fired_by: Mapped[str | None] = mapped_column(String(64))
    repeat: Mapped[int] = mapped_column(Integer, default=0)  # nth repetition of a reminder

    __table_args__ = (Index("ix_timers_pending_due", "status", "due_at"),)


class AuditRow(Base):
    """Append-only, hash-chained record of every fact about a call.

    ``hash`` = SHA-256 over the previous row's hash and this row's canonical content, so
    editing, deleting or reordering any row breaks the chain from that row on
    (``carecall audit verify``).
    """

    __tablename__ = "audit_log"
    # Two covering indexes (migration 0005) let a month's report read the log without
    # touching its wide rows (hashes, JSON details): the calls that started in a window
    # (kind, at → call_id), then every call's moments (call_id, kind, at, actor,
    # station). Their prefixes serve the lookups by call and by kind. SQLite has no
    # INCLUDE and takes the key columns only.
    __table_args__ = (
        Index("ix_audit_log_call_marks", "call_id", "kind", "at", postgresql_include=["actor", "station_id"]),
        Index("ix_audit_log_kind_at", "kind", "at", postgresql_include=["call_id"]),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), unique=True)
    call_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(100))
    station_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the chain's last seq and hash. Locked by each append, which serialises
    appends across dispatcher copies so the chain never forks."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    hash: Mapped[str] = mapped_column(String(64))


class Notification(Base):
    """Outbox of notifications (station alert, reminder, contacts, supervisor). Sent by a
    notifier plugin, retried with backoff, recorded; never blocks the call."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(Integer, ForeignKey("calls.id", ondelete="RESTRICT"), index=True)
    channel: Mapped[str] = mapped_column(String(32))  # log, webhook, sms …
    purpose: Mapped[str] = mapped_column(String(32))  # alert_station, remind, notify_contact …
    target: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending sent failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

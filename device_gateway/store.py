"""Database writes of the gateway: stored events (exactly once), rejections, device state.

All set-based: one statement per batch, whatever the batch size. Events are inserted with
ON CONFLICT DO NOTHING on (device_id, event_id), so a resent event is the same row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core import row_batch
from carecall.core.one_of import one_of
from device_gateway.models import Device, DeviceEvent, DeviceState, RejectedMessage


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Registry facts the gateway needs for every message of a device."""

    id: str
    home_id: str
    kind: str
    enabled: bool
    heartbeat_s: int
    privileged: bool
    capacity_level: int | None
    hr_min: int | None
    hr_max: int | None
    rr_min: int | None
    rr_max: int | None


@dataclass(frozen=True, slots=True)
class ResidentVitals:
    """How a home's vitals are watched: the facts of its most dependent resident."""

    capacity_level: int | None
    hr_min: int | None
    hr_max: int | None
    rr_min: int | None
    rr_max: int | None


class ResidentLookup(Protocol):
    """Home id → ``ResidentVitals`` (homes without a resident absent). Residents are the
    registry's: the process wiring hands the gateway the registry's lookup, the edge
    itself reads no resident table."""

    async def __call__(
        self, session: AsyncSession, *, home_ids: Sequence[str]
    ) -> Mapping[str, ResidentVitals]: ...


@dataclass(slots=True)
class EventRow:
    device_id: str
    event_id: str
    home_id: str
    type: str
    event_class: str
    sensor: str | None
    data: dict[str, Any]
    source: str
    device_ts: datetime | None
    received_at: datetime
    clock_skew_s: float | None
    clock_suspect: bool
    gateway: str
    # not stored: when the message arrived (monotonic) and whether the device awaits an ack
    t_arrived: float = 0.0
    ack: bool = True

    def values(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "event_id": self.event_id,
            "home_id": self.home_id,
            "type": self.type,
            "event_class": self.event_class,
            "sensor": self.sensor,
            "data": self.data,
            "source": self.source,
            "device_ts": self.device_ts,
            "received_at": self.received_at,
            "clock_skew_s": self.clock_skew_s,
            "clock_suspect": self.clock_suspect,
            "gateway": self.gateway,
        }


@dataclass(slots=True)
class RejectRow:
    received_at: datetime
    device_id: str | None
    topic: str
    reason: str
    detail: str
    payload_size: int
    payload_excerpt: str
    messages: int = 1  # > 1: a summary of rate-limited rejections (device_gateway/limits.py)


@dataclass(slots=True)
class PendingState:
    """What one gateway copy learned about a device since its last flush."""

    last_seen: datetime | None = None
    metrics: dict[str, Any] | None = None
    metrics_at: datetime | None = None
    trend: list[tuple[int, float | None, float | None]] = field(default_factory=list)
    battery_pct: float | None = None
    last_status: str | None = None
    last_test_at: datetime | None = None
    will_at: datetime | None = None  # the latest signal was the MQTT will
    extra: dict[str, Any] = field(default_factory=dict)


def dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if dialect(session) == "postgresql" else sqlite.insert


def _greatest(session: AsyncSession, a: Any, b: Any) -> Any:
    if dialect(session) == "postgresql":
        return func.greatest(a, b)
    return func.max(a, b)


async def load_devices(
    session: AsyncSession, device_ids: Iterable[str] | None = None, *, residents: ResidentLookup
) -> list[DeviceInfo]:
    """Devices with their home's watched resident facts (the ones the rules use)."""
    stmt = select(
        Device.id,
        Device.home_id,
        Device.kind,
        Device.enabled,
        Device.heartbeat_s,
        Device.privileged,
    )
    if device_ids is not None:
        stmt = stmt.where(one_of(Device.id, list(device_ids)))
    rows = (await session.execute(stmt)).all()
    vitals = await residents(session, home_ids=sorted({r.home_id for r in rows}))
    out = []
    for r in rows:
        res = vitals.get(r.home_id)
        out.append(
            DeviceInfo(
                id=r.id,
                home_id=r.home_id,
                kind=r.kind,
                enabled=r.enabled,
                heartbeat_s=r.heartbeat_s,
                privileged=r.privileged,
                capacity_level=res.capacity_level if res else None,
                hr_min=res.hr_min if res else None,
                hr_max=res.hr_max if res else None,
                rr_min=res.rr_min if res else None,
                rr_max=res.rr_max if res else None,
            )
        )
    return out


async def insert_events(session: AsyncSession, rows: Sequence[EventRow]) -> set[tuple[str, str]]:
    """Insert; return the (device_id, event_id) pairs that were new (not resends)."""
    if not rows:
        return set()
    seen: dict[tuple[str, str], EventRow] = {}
    for r in rows:
        seen.setdefault((r.device_id, r.event_id), r)
    values = [r.values() for r in seen.values()]
    if dialect(session) == "postgresql":
        # one array per column (carecall/core/row_batch.py): the same SQL text for any
        # number of rows, so the driver's prepared statement is reused; the multi-row
        # VALUES form below is a new text, and a prepare round trip, for every batch size
        stmt_pg, params = row_batch.statement(
            [(row_batch.table_of(DeviceEvent), values)],
            suffix=" ON CONFLICT (device_id, event_id) DO NOTHING RETURNING device_id, event_id",
        )
        result = await session.execute(stmt_pg, params)
        return {(d, e) for d, e in result.all()}
    # executemany form: SQLAlchemy compiles the statement once and caches it, then sends
    # the rows as multi-row VALUES batches ("insertmanyvalues"); a .values([...]) list
    # would be compiled anew for every batch size, which dominated the gateway's CPU.
    stmt = (
        _insert(session)(DeviceEvent)
        .on_conflict_do_nothing(index_elements=["device_id", "event_id"])
        .returning(DeviceEvent.device_id, DeviceEvent.event_id)
    )
    result = await session.execute(stmt, values)
    return {(d, e) for d, e in result.all()}


async def insert_rejects(session: AsyncSession, rows: Sequence[RejectRow]) -> None:
    if not rows:
        return
    await session.execute(
        _insert(session)(RejectedMessage),
        [
            {
                "received_at": r.received_at,
                "device_id": r.device_id,
                "topic": r.topic,
                "reason": r.reason,
                "detail": r.detail,
                "payload_size": r.payload_size,
                "payload_excerpt": r.payload_excerpt,
                "messages": r.messages,
            }
            for r in rows
        ],
    )


async def mark_offline(
    session: AsyncSession, device_ids: Sequence[str], at: datetime
) -> list[tuple[str, datetime | None]]:
    """Flip online → offline; returns (device_id, last_seen) only for rows this call flipped,
    so with several gateway copies exactly one raises the offline event.

    A will proves the device was connected, so a device never recorded offline (no
    ``offline_since``) is flipped too, even if no reading of it reached us first: a
    power cut's devices whose "online" or last reading was lost on the way still get
    their outage. Call after ``flush_states``, which writes the row it flips."""
    if not device_ids:
        return []
    result = await session.execute(
        update(DeviceState)
        .where(
            one_of(DeviceState.device_id, list(device_ids)),
            or_(DeviceState.online.is_(True), DeviceState.offline_since.is_(None)),
        )
        .values(online=False, offline_since=at, offline_due_at=None)
        .returning(DeviceState.device_id, DeviceState.last_seen_at)
    )
    return [(d, s) for d, s in result.all()]


async def sweep_overdue(session: AsyncSession, now: datetime) -> list[tuple[str, datetime | None]]:
    """Devices silent past their due time go offline (one set-based UPDATE)."""
    enabled = select(Device.id).where(Device.enabled.is_(True)).scalar_subquery()
    result = await session.execute(
        update(DeviceState)
        .where(
            DeviceState.online.is_(True),
            DeviceState.offline_due_at < now,
            DeviceState.device_id.in_(enabled),
        )
        .values(online=False, offline_since=now, offline_due_at=None)
        .returning(DeviceState.device_id, DeviceState.last_seen_at)
    )
    return [(d, s) for d, s in result.all()]


TREND_POINTS = 180  # three hours at one point a minute


async def _merged_trends(
    session: AsyncSession, pending: dict[str, PendingState]
) -> dict[str, list[list[float | None]]]:
    """New hr/rr points merged with the stored ones (another gateway copy may have added
    points for the same device), oldest dropped."""
    fresh = {d: p.trend for d, p in pending.items() if p.trend}
    if not fresh:
        return {}
    stored = dict(
        (
            await session.execute(
                select(DeviceState.device_id, DeviceState.vitals_trend).where(
                    one_of(DeviceState.device_id, list(fresh))
                )
            )
        ).all()
    )
    out: dict[str, list[list[float | None]]] = {}
    for device_id, points in fresh.items():
        merged: dict[int, list[float | None]] = {
            int(p[0] or 0): list(p) for p in (stored.get(device_id) or [])
        }
        for ms, hr, rr in points:
            merged[ms] = [float(ms), hr, rr]
        out[device_id] = [merged[k] for k in sorted(merged)][-TREND_POINTS:]
    return out


async def flush_states(
    session: AsyncSession,
    pending: dict[str, PendingState],
    heartbeat_s: dict[str, int],
    intervals: int,
) -> list[tuple[str, datetime | None]]:
    """Write what was learned; return (device_id, offline_since) of devices back online.

    The restore is a conditional UPDATE … RETURNING, so with several gateway copies
    exactly one of them sees each device come back and raises the ``online`` event.
    """
    # Seen in this window: alive at that moment, even if its will came after (the
    # gateway then flips it offline in the same transaction, with its event).
    alive = [d for d, p in pending.items() if p.last_seen is not None]
    restored: list[tuple[str, datetime | None]] = []
    if alive:
        result = await session.execute(
            update(DeviceState)
            .where(
                one_of(DeviceState.device_id, sorted(alive)),
                DeviceState.online.is_(False),
                DeviceState.offline_since.is_not(None),
            )
            .values(online=True)
            .returning(DeviceState.device_id, DeviceState.offline_since)
        )
        restored = [(d, s) for d, s in result.all()]
    trends = await _merged_trends(session, pending)
    rows = []
    # in device id order: two gateway copies flushing overlapping devices then lock their
    # rows in the same order (in the order each first saw them, they deadlocked now and then)
    for device_id, p in sorted(pending.items()):
        due = (
            p.last_seen + timedelta(seconds=heartbeat_s.get(device_id, 60) * intervals)
            if p.last_seen is not None
            else None
        )
        rows.append(
            {
                "device_id": device_id,
                "last_seen_at": p.last_seen,
                "online": p.last_seen is not None,
                "offline_due_at": due,
                "metrics": p.metrics,
                "metrics_at": p.metrics_at,
                "vitals_trend": trends.get(device_id),
                "battery_pct": p.battery_pct,
                "last_status": p.last_status,
                "last_test_at": p.last_test_at,
            }
        )
    if not rows:
        return restored
    stmt = _insert(session)(DeviceState)  # executemany below: compiled once, cached
    ex = stmt.excluded
    t = DeviceState.__table__.c
    stmt = stmt.on_conflict_do_update(
        index_elements=["device_id"],
        set_={
            # several copies may flush the same device: the latest sighting wins
            "last_seen_at": func.coalesce(
                _greatest(session, t.last_seen_at, ex.last_seen_at), t.last_seen_at, ex.last_seen_at
            ),
            "offline_due_at": func.coalesce(
                _greatest(session, t.offline_due_at, ex.offline_due_at),
                t.offline_due_at,
                ex.offline_due_at,
            ),
            "online": or_(t.online, ex.online),
            "metrics": func.coalesce(ex.metrics, t.metrics),
            "metrics_at": func.coalesce(ex.metrics_at, t.metrics_at),
            "vitals_trend": func.coalesce(ex.vitals_trend, t.vitals_trend),
            "battery_pct": func.coalesce(ex.battery_pct, t.battery_pct),
            "last_status": func.coalesce(ex.last_status, t.last_status),
            "last_test_at": func.coalesce(ex.last_test_at, t.last_test_at),
        },
    )
    await session.execute(stmt, rows)
    return restored

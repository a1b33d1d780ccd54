"""What the stall monitor and the health endpoints ask the database: a few oldest times of
waiting work (each answered by an index), whether the database answers, and who the
active admins are."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.models import DeviceEvent
from dispatcher.auth.models import User
from dispatcher.calls.models import EventIntake, Timer
from dispatcher.notifications.models import DEVICE_ACK_CHANNEL, Notification, NotificationStatus

# All events below the oldest one waiting are taken: the next check starts this many ids
# before it, because on PostgreSQL an id is drawn before its transaction commits, so a row
# with a lower id can still appear (a gateway commits at most a batch of a few hundred).
EVENT_FLOOR_MARGIN = 5_000


@dataclass(frozen=True)
class Oldest:
    """The oldest time of each kind of waiting work, as stored (simulated time in a demo)."""

    event_received_at: datetime | None
    timer_due_at: datetime | None
    ack_queued_at: datetime | None
    notification_due_at: datetime | None
    event_floor: int  # where the next look for waiting events may start


def waiting_events_query(event_floor: int) -> Select[int, datetime]:
    """The first id and oldest receipt of stored events not taken into event_intake, from
    ``event_floor`` on: a range of both primary keys, not the whole history."""
    taken = exists().where(EventIntake.event_pk == DeviceEvent.id, EventIntake.event_pk >= event_floor)
    return select(func.min(DeviceEvent.id), func.min(DeviceEvent.received_at)).where(
        DeviceEvent.id >= event_floor, ~taken
    )


def pending_timer_query() -> Select[datetime]:
    """The earliest due time of a pending timer (ix_timers_pending_due)."""
    return select(func.min(Timer.due_at)).where(Timer.status == "pending")


def pending_notifications_query() -> Select[str, datetime, datetime]:
    """Per channel, the earliest next attempt and the oldest queued time of pending
    notifications (ix_notifications_pending, a partial index over the pending rows)."""
    return (
        select(
            Notification.channel, func.min(Notification.next_attempt_at), func.min(Notification.created_at)
        )
        .where(Notification.status == NotificationStatus.pending.value)
        .group_by(Notification.channel)
    )


async def read_oldest(session: AsyncSession, *, event_floor: int = 0) -> Oldest:
    """The four small queries above."""
    first_id, oldest_event = (await session.execute(waiting_events_query(event_floor))).one()
    if first_id is None:
        top = await session.scalar(select(func.max(DeviceEvent.id)))
        floor = max(event_floor, int(top or 0) + 1 - EVENT_FLOOR_MARGIN)
    else:
        floor = max(event_floor, int(first_id) - EVENT_FLOOR_MARGIN)
    due = await session.scalar(pending_timer_query())
    rows = (await session.execute(pending_notifications_query())).all()
    ack = min((utc(r[2]) for r in rows if r[0] == DEVICE_ACK_CHANNEL and r[2] is not None), default=None)
    note = min((utc(r[1]) for r in rows if r[0] != DEVICE_ACK_CHANNEL and r[1] is not None), default=None)
    return Oldest(_utc_or_none(oldest_event), _utc_or_none(due), ack, note, max(floor, 0))


def utc(at: datetime) -> datetime:
    """A stored time as an aware UTC time (SQLite gives them back naive)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _utc_or_none(at: datetime | None) -> datetime | None:
    return None if at is None else utc(at)


async def database_status(maker: async_sessionmaker[AsyncSession]) -> str:
    """ "ok" when the database answers a trivial query, else the kind of error (health
    must answer, not raise)."""
    try:
        async with maker() as session:
            await session.execute(select(1))
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def active_admins(session: AsyncSession) -> list[tuple[str, str]]:
    """(username, locale) of every active admin."""
    rows = await session.execute(
        select(User.username, User.locale).where(User.role == "admin", User.active.is_(True))
    )
    return [(username, locale) for username, locale in rows.all()]

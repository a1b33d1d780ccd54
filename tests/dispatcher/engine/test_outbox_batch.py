"""The outbox records a round's deliveries in one UPDATE (issue 15, the alarm lane): a
storm's station alerts went out as one UPDATE per notification (a round trip each, a
quarter of the PostgreSQL backends' waiting in a bench sample); the sent ones of a round
now share one statement, a failed one still gets its own retry time and error."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.engine.process import Dispatcher
from dispatcher.notifications.models import DEVICE_ACK_CHANNEL, Notification
from dispatcher.notifications.notifiers import LogNotifier, Message, NotifyError
from tests.dispatcher.engine.support import ManualClock
from tests.dispatcher.engine.test_alarm_path import engine_of
from tests.dispatcher.engine.test_timer_batch import _storm, statements


def _updates(seen: list[str]) -> int:
    return sum(1 for s in seen if s.startswith("UPDATE notifications"))


async def test_a_rounds_sent_notifications_are_recorded_in_one_update(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
) -> None:
    d, _clock, _ = setup
    calls = await _storm(maker, d)
    with statements(engine_of(maker)) as seen:
        sent = await d.outbox_once()
    async with maker() as s:
        rows = (await s.scalars(select(Notification).where(Notification.channel != DEVICE_ACK_CHANNEL))).all()
        audit = Counter((await s.scalars(select(AuditRow.kind))).all())
    people = [n for n in rows if n.call_id in set(calls)]
    assert len(people) >= len(calls) and sent >= len(people)
    assert {(n.status, n.attempts) for n in people} == {("sent", 1)}
    assert audit["notification_sent"] == len(rows)
    # device acks (one UPDATE), then the people's notifications (one UPDATE): not one per row
    assert _updates(seen) <= 2, Counter(seen)
    assert (await verify_log(maker)).ok


class _FailSome(LogNotifier):
    """Refuses the notifications of every other call."""

    async def send(self, msg: Message) -> str:
        if (msg.call_id or 0) % 2:
            raise NotifyError("gateway refused")
        return await super().send(msg)


async def test_a_failed_delivery_keeps_its_own_retry_and_error(
    setup: tuple[Dispatcher, ManualClock, LogNotifier],
    maker: async_sessionmaker[AsyncSession],
) -> None:
    d, clock, _ = setup
    await _storm(maker, d)
    d.notifier = _FailSome()
    await d.outbox_once()
    async with maker() as s:
        rows = (await s.scalars(select(Notification).where(Notification.channel != DEVICE_ACK_CHANNEL))).all()
    failed = [n for n in rows if (n.call_id or 0) % 2]
    ok = [n for n in rows if not (n.call_id or 0) % 2]
    assert failed and ok
    assert {(n.status, n.attempts, n.last_error) for n in failed} == {("pending", 1, "gateway refused")}
    assert all(n.next_attempt_at > clock.now() for n in failed)
    assert {(n.status, n.attempts, n.last_error) for n in ok} == {("sent", 1, None)}

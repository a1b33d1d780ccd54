"""The outbox loop: due notifications → people (through the notifier) and devices (acks
over MQTT, dispatcher.engine.mqtt). Each delivery is recorded in the call's audit log (an
order's or a visit's page: in the log under its order or visit id, without a call); a
failed one is retried with backoff, then given up, and never blocks the call. Call
notifications go before order and visit pages when both are due."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.one_of import one_of
from dispatcher.audit import service as audit
from dispatcher.audit.chain import AuditKind
from dispatcher.engine import handling, outbox_channels
from dispatcher.engine.metrics import NOTIFY
from dispatcher.engine.mqtt import MqttLink
from dispatcher.notifications.channel_notifier import ChannelNotifier
from dispatcher.notifications.compose import masked_target
from dispatcher.notifications.models import DEVICE_ACK_CHANNEL, Notification, NotificationStatus
from dispatcher.notifications.notifiers import Message, NotifyError

log = structlog.get_logger("carecall.dispatcher")

SEND_TIMEOUT_S = 10.0

# (receipt, error, ms) of one delivery attempt
Delivery = tuple[str | None, Exception | None, float]


class OutboxLoop(MqttLink):
    async def outbox_once(self, limit: int = 100) -> int:
        """Deliver due notifications. Device acks go first, in a transaction of their own;
        then the rest. The sends happen before the audit chain's lock is taken (the rows
        are ours meanwhile: SKIP LOCKED), so a slow webhook never holds up intake, timers or
        another copy; the results are chained at commit. The round writes nothing before
        its sends and cost alerts are done: those take the chain's lock in transactions of
        their own (the shared cost budget's reservations, dispatcher/notifications/
        cost_ledger.py), and SQLite has a single writer."""
        now = self.clock.now()
        done = 0
        for acks in (True, False):
            if done >= limit:
                break
            async with self.maker() as session, session.begin():
                audit.defer(session)  # chained at commit, after the sends
                rows = await self._due(session, now, limit - done, acks=acks)
                if acks and rows:
                    await self._device_acks(session, rows, now)
                elif rows:
                    await self._notify(session, rows, now)
                done += len(rows)
        return done

    async def _due(
        self, session: AsyncSession, now: datetime, limit: int, *, acks: bool
    ) -> list[Notification]:
        stmt = (
            select(Notification)
            .where(
                Notification.status == NotificationStatus.pending.value,
                Notification.next_attempt_at <= now,
                (Notification.channel == DEVICE_ACK_CHANNEL)
                if acks
                else (Notification.channel != DEVICE_ACK_CHANNEL),
            )
            # a call's notifications first: an order's or a visit's page never takes an
            # emergency's place when both wait (dispatcher/notifications/service_pages.py)
            .order_by(Notification.call_id.is_(None), Notification.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return list((await session.scalars(stmt)).all())

    async def _notify(self, session: AsyncSession, rows: list[Notification], now: datetime) -> None:
        routed = [n for n in rows if self._routed(n)]
        plain = [n for n in rows if not self._routed(n)]
        results, channel_results = await asyncio.gather(
            asyncio.gather(*(self._send(n) for n in plain)), self._send_routed(session, routed)
        )
        if routed:
            assert isinstance(self.notifier, ChannelNotifier)
            for n, channel_result in zip(routed, channel_results, strict=True):
                await outbox_channels.cost_alerts(
                    session, notifier=self.notifier, n=n, result=channel_result, now=now, actor=self.name
                )
        sent = [n.id for n, result in zip(plain, results, strict=True) if result[1] is None]
        if sent:
            # one UPDATE for every delivery that went out, not one per row (each statement
            # is a round trip to the database); a failed one has values of its own
            await session.execute(
                update(Notification)
                .where(one_of(Notification.id, sent))
                .values(status=NotificationStatus.sent.value, attempts=Notification.attempts + 1)
                .execution_options(synchronize_session=False)
            )
        for n, result in zip(plain, results, strict=True):
            await self._record_delivery(session, n, result, now)
            await asyncio.sleep(0)  # a turn for the intake between rows (see timer_loop)
        for n, channel_result in zip(routed, channel_results, strict=True):
            await self._record_routed(session, n, channel_result, now)

    def _routed(self, n: Notification) -> bool:
        """Goes through the channels of config/notifications.yaml (never without the file)."""
        return isinstance(self.notifier, ChannelNotifier) and self.notifier.handles(n.purpose)

    async def _send_routed(
        self, session: AsyncSession, rows: list[Notification]
    ) -> list[outbox_channels.ChannelDelivery]:
        if not rows:
            return []
        assert isinstance(self.notifier, ChannelNotifier)
        return await outbox_channels.send_all(session, self.notifier, rows, self.clock)

    async def _record_routed(
        self, session: AsyncSession, n: Notification, result: outbox_channels.ChannelDelivery, now: datetime
    ) -> None:
        assert isinstance(self.notifier, ChannelNotifier)
        sent = await outbox_channels.record(
            session, notifier=self.notifier, n=n, result=result, now=now, actor=self.name
        )
        if sent:
            self.stats.notifications_sent += 1
        else:
            self.stats.notifications_failed += 1
        for step in result.steps:
            status = step.receipt.status.value if step.receipt else "blocked_by_cost_guard"
            NOTIFY.labels(step.channel, status).inc()

    async def _send(self, n: Notification) -> Delivery:
        """(receipt, error, ms) of one delivery attempt; a NotifyError or a timeout is
        returned, not raised — and so is any other failure of this one notification (a
        notifier bug, a body it cannot format): it is retried and given up like a failed
        send, and never fails the rest of the batch."""
        t0 = time.monotonic()
        try:
            msg = Message(
                notification_id=n.id, call_id=n.call_id, purpose=n.purpose, target=n.target, body=n.body
            )
            receipt = await asyncio.wait_for(self.notifier.send(msg), SEND_TIMEOUT_S)
        except (NotifyError, TimeoutError) as exc:
            return None, exc, (time.monotonic() - t0) * 1000
        except Exception as exc:
            log.error("dispatcher.handling_failed", task="outbox", notification_id=n.id, exc_info=exc)
            return None, exc, (time.monotonic() - t0) * 1000
        return receipt, None, (time.monotonic() - t0) * 1000

    async def _record_delivery(
        self, session: AsyncSession, n: Notification, result: Delivery, now: datetime
    ) -> None:
        """The audit row of a delivery, and a failed one's new state (retried with a
        doubling delay, given up after MAX_ATTEMPTS); a sent one's state is the batch's
        UPDATE (``_notify``)."""
        receipt, exc, ms = result
        attempts = n.attempts + 1
        if exc is None:
            kind, result_label = AuditKind.notification_sent, "sent"
            outcome: dict[str, Any] = {"receipt": receipt, "ms": round(ms, 1)}
        else:
            final = attempts >= handling.MAX_ATTEMPTS
            kind, result_label = AuditKind.notification_failed, "failed"
            values = {
                "attempts": attempts,
                "status": (NotificationStatus.failed if final else NotificationStatus.pending).value,
                "next_attempt_at": now + timedelta(seconds=min(2**attempts, 300)),
                "last_error": str(exc)[:500] or type(exc).__name__,
            }
            outcome = {"attempt": attempts, "final": final, "error": str(exc)[:300]}
            await session.execute(update(Notification).where(Notification.id == n.id).values(**values))
        await audit.append(
            session,
            kind=kind.value,
            at=now,
            actor=self.name,
            call_id=n.call_id,
            station_id=outbox_channels.station_of(n),
            detail={
                "notification_id": n.id,
                "purpose": n.purpose,
                "target": n.target if n.call_id is not None else masked_target(n.target),
                "channel": n.channel,
                **outbox_channels.subject(n),
                **outcome,
            },
        )
        if exc is None:
            self.stats.notifications_sent += 1
        else:
            self.stats.notifications_failed += 1
        NOTIFY.labels(n.channel, result_label).inc()

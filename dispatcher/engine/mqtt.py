"""The dispatcher's link to the broker: one MQTT connection, held and re-made, over which
device acks from the outbox are published (encoded by device_gateway.protocol.ack_payload,
the one encoder of the ack message)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import aiomqtt
import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from carecall.core.cancel import raise_if_cancelling
from carecall.core.one_of import one_of
from device_gateway import protocol as p
from device_gateway.mqtt import mqtt_client
from dispatcher.calls import failures
from dispatcher.engine import handling
from dispatcher.engine.base import DispatcherState
from dispatcher.engine.metrics import NOTIFY
from dispatcher.notifications.models import DEVICE_ACK_CHANNEL, Notification, NotificationStatus

log = structlog.get_logger("carecall.dispatcher")

# An MqttError is the connection's: the ack is retried for as long as it takes.
_TRANSPORT = (aiomqtt.MqttError, asyncio.CancelledError)


class MqttLink(DispatcherState):
    async def _mqtt_loop(self) -> None:
        """Hold an MQTT connection for device acks; reconnect with backoff when it is lost.

        ``_client`` is set only while connected: while disconnected nothing is handed to
        the MQTT library (whose queue would grow with every retry), and device acks wait
        in the outbox table instead."""
        assert self.mqtt is not None
        backoff = handling.Backoff()
        while True:
            connected_at: float | None = None
            try:
                async with mqtt_client(self.mqtt, f"carecall-{self.name}", clean_session=True) as client:
                    connected_at = time.monotonic()
                    self._client = client
                    log.info("dispatcher.mqtt_connected", broker=f"{self.mqtt.host}:{self.mqtt.port}")
                    self._wake_outbox.set()
                    # The dispatcher subscribes to nothing, so this waits; it raises
                    # MqttError the moment the connection is lost.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                log.warning("dispatcher.mqtt_lost", error=str(exc), retry_s=backoff.s)
            except Exception as exc:  # a broken connection must never end the loop
                log.error("dispatcher.mqtt_failed", retry_s=backoff.s, exc_info=exc)
            finally:
                self._client = None
            raise_if_cancelling()  # aiomqtt may have swallowed a stop while (dis)connecting
            if connected_at is not None and time.monotonic() - connected_at > 10:
                backoff.reset()  # it was up for a while: this is a new outage
            await backoff.wait()

    async def _device_acks(self, session: AsyncSession, rows: list[Notification], now: datetime) -> None:
        """Publish device acks concurrently (one PUBACK wait for the batch, not per ack)."""
        client = self._client
        if client is None:
            if self.mqtt is None:  # no broker configured (API-only tests): nothing can send it
                values: dict[str, object] = {
                    "status": NotificationStatus.failed.value,
                    "last_error": "no MQTT broker configured",
                }
            else:
                values = {"next_attempt_at": now + timedelta(seconds=1)}
            ids = [n.id for n in rows]
            await session.execute(update(Notification).where(one_of(Notification.id, ids)).values(**values))
            return

        async def publish(n: Notification) -> None:
            topic = p.topic_for(n.target.removeprefix("device:"), p.Channel.ack)
            payload = p.ack_payload(
                str(n.body.get("event_id", "")), p.AckState(n.body["state"]), self.clock.now_ms()
            )
            await client.publish(topic, payload, qos=1, timeout=5)

        results = await asyncio.gather(*(publish(n) for n in rows), return_exceptions=True)
        ok = [n.id for n, r in zip(rows, results, strict=True) if r is None]
        # an MqttError is the connection's: retried for as long as it takes; anything else
        # (a target that is no device id, a body it cannot send) is this ack's, retried a
        # bounded number of times, then given up
        bad = [n.id for n, r in zip(rows, results, strict=True) if isinstance(r, _TRANSPORT)]
        for n, r in zip(rows, results, strict=True):
            if isinstance(r, BaseException) and not isinstance(r, _TRANSPORT):
                await self._ack_broken(session, n, r, now)
        if ok:
            await session.execute(
                update(Notification)
                .where(one_of(Notification.id, ok))
                .values(status=NotificationStatus.sent.value, attempts=1)
            )
            self.stats.device_acks += len(ok)
            NOTIFY.labels(DEVICE_ACK_CHANNEL, "sent").inc(len(ok))
        if bad:
            await session.execute(
                update(Notification)
                .where(one_of(Notification.id, bad))
                .values(attempts=Notification.attempts + 1, next_attempt_at=now + timedelta(seconds=2))
            )
            NOTIFY.labels(DEVICE_ACK_CHANNEL, "retry").inc(len(bad))

    async def _ack_broken(
        self, session: AsyncSession, n: Notification, exc: BaseException, now: datetime
    ) -> None:
        """An ack that cannot be sent for a reason of its own: retried, then given up."""
        final = n.attempts + 1 >= handling.MAX_ATTEMPTS
        await session.execute(
            update(Notification)
            .where(Notification.id == n.id)
            .values(
                attempts=n.attempts + 1,
                status=(NotificationStatus.failed if final else NotificationStatus.pending).value,
                next_attempt_at=now + timedelta(seconds=2),
                last_error=failures.describe(exc),
            )
        )
        NOTIFY.labels(DEVICE_ACK_CHANNEL, "failed" if final else "retry").inc()
        log.error(
            "dispatcher.handling_failed", task="device_ack", notification_id=n.id, final=final, exc_info=exc
        )

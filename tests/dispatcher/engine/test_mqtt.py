"""Device acks leave the outbox over MQTT in the protocol's one encoding
(device_gateway.protocol.ack_payload), and are marked sent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.mqtt import MqttTarget
from device_gateway.protocol import AckMessage, AckState, ack_payload
from dispatcher.notifications.models import Notification
from tests.dispatcher.engine.support import T0, store_event


class RecordingMqtt:
    """Stands in for a connected aiomqtt client: records each publish."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 0, timeout: float | None = None) -> None:
        self.sent.append((topic, payload, qos))


async def test_a_device_ack_is_published_as_the_protocol_encodes_it(
    setup: Any, maker: async_sessionmaker[AsyncSession]
) -> None:
    d, clock, _ = setup
    await store_event(maker, "h1-btn", "e1", "sos", T0)
    await d.intake_once()  # the call is opened: the button is told "assigned"
    fake = RecordingMqtt()
    d.mqtt = MqttTarget.from_url("mqtt://127.0.0.1:1")
    d._client = fake
    await d.outbox_once()
    assert fake.sent == [
        ("carecall/v1/devices/h1-btn/ack", ack_payload("e1", AckState.assigned, clock.now_ms()), 1)
    ]
    ack = AckMessage.model_validate_json(fake.sent[0][1])
    assert ack.event_id == "e1" and ack.state is AckState.assigned
    async with maker() as s:
        row = (await s.scalars(select(Notification).where(Notification.channel == "mqtt"))).one()
    assert row.status == "sent" and row.attempts == 1
    assert d.stats.device_acks == 1

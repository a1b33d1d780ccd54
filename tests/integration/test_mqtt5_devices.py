"""docs/protocol.md: devices speak MQTT 3.1.1 *or 5.0*. A 5.0 device on the production broker
(Mosquitto) gets the same service as a 3.1.1 one: its SOS is stored once however often it
resends, its telemetry and status are taken, and its acks come back on its own topic.
(The embedded amqtt broker of the demo speaks 3.1.1 only; docs/protocol.md says so.)"""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.models import DeviceEvent, DeviceState, RejectedMessage
from tests.conftest import add_small_registry
from tests.integration.conftest import running_gateway
from tests.integration.test_gateway_real_services import ROOT, uniq

pytestmark = pytest.mark.integration


async def test_mqtt5_device_is_served_like_a_311_one(
    mosquitto: tuple[str, int],
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    leave_no_retained: set[str],
) -> None:
    host, port = mosquitto
    dev = uniq("btn5")
    leave_no_retained.add(dev)  # its online status, and the config the gateway answers it with
    await add_small_registry(pg_maker, {dev: "button"})
    async with running_gateway(mosquitto, pg_url, pg_maker, redis_url, instance=uniq("it5")) as gw:
        # MQTT 5 extras a device may send: user properties and a message expiry on the
        # event, and a will; none of them may change what the gateway does.
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("fw", "2.1.0")]
        props.MessageExpiryInterval = 3600
        will = aiomqtt.Will(
            f"{ROOT}/{dev}/status", json.dumps({"state": "offline"}).encode(), qos=1, retain=True
        )
        async with aiomqtt.Client(
            host, port, identifier=dev, protocol=aiomqtt.ProtocolVersion.V5, clean_start=True, will=will
        ) as c:
            await c.subscribe(f"{ROOT}/{dev}/ack", qos=1)
            await c.publish(
                f"{ROOT}/{dev}/status", json.dumps({"state": "online"}).encode(), qos=1, retain=True
            )
            now_ms = int(time.time() * 1000)
            await c.publish(
                f"{ROOT}/{dev}/telemetry",
                json.dumps({"ts": now_ms, "metrics": {"battery_pct": 87}}).encode(),
                qos=1,
                properties=props,
            )
            sos = json.dumps(
                {"id": "sos-v5", "ts": now_ms, "type": "sos", "sensor": "bedside-button"}
            ).encode()
            t0 = time.monotonic()
            acks: list[dict[str, object]] = []

            async def read() -> None:
                async for m in c.messages:
                    body = json.loads(m.payload)  # type: ignore[arg-type]
                    acks.append(body)
                    if sum(1 for a in acks if a.get("event_id") == "sos-v5") >= 2:
                        return

            reader = asyncio.create_task(read())
            for _ in range(2):  # resent, as a device does before its ack arrives
                await c.publish(f"{ROOT}/{dev}/events", sos, qos=1, properties=props)
            await asyncio.wait_for(reader, 10)
            ms = (time.monotonic() - t0) * 1000
        print(f"\nMQTT 5 device: 2 acks for its SOS in {ms:.1f} ms: {[a.get('state') for a in acks]}")
        assert {a.get("state") for a in acks if a.get("event_id") == "sos-v5"} == {"received"}

        await gw._flush()
        async with pg_maker() as s:
            stored = await s.scalar(
                select(func.count())
                .select_from(DeviceEvent)
                .where(DeviceEvent.device_id == dev, DeviceEvent.event_id == "sos-v5")
            )
            deadline = time.monotonic() + 10
            battery = None
            while time.monotonic() < deadline:
                battery = await s.scalar(select(DeviceState.battery_pct).where(DeviceState.device_id == dev))
                if battery is not None:
                    break
                await asyncio.sleep(0.2)
                await gw._flush()
                s.expire_all()
            # the broker is shared: count only this device's rejections
            rejected = await s.scalar(
                select(func.count()).select_from(RejectedMessage).where(RejectedMessage.device_id == dev)
            )
        assert stored == 1
        assert battery == 87
        assert rejected == 0

"""A simulated device against a real (in-process) broker: the v1 contract from the device side."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiomqtt
import pytest

from carecall.core.clock import Clock
from device_gateway.protocol import AckState, Channel, topic_for
from simulators.device import DeviceSpec, SimulatedDevice
from simulators.scenario import Backoff, Scenario
from tests.simulators.conftest import FakePlatform, free_port, start_broker, stop_broker, until

Factory = Callable[..., Awaitable[FakePlatform]]
SPEED = 100.0  # resend after 5 simulated s = 50 ms real


def spec(device_id: str = "btn-1", kind: str = "button") -> DeviceSpec:
    return DeviceSpec(device_id=device_id, kind=kind, home_id="h1", secret="s3cret", heartbeat_s=60)


@pytest.fixture
async def device(broker_port: int) -> AsyncIterator[SimulatedDevice]:
    sim = SimulatedDevice(spec(), host="127.0.0.1", port=broker_port, clock=Clock(SPEED))
    sim.start()
    async with asyncio.timeout(5):
        await sim.wait_online()
    yield sim
    await sim.stop()


async def next_status(client: aiomqtt.Client) -> tuple[dict[str, str], bool]:
    async with asyncio.timeout(5):
        message = await anext(client.messages)
        while not message.topic.matches("carecall/v1/devices/+/status"):
            message = await anext(client.messages)  # amqtt leaks others' retained messages
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload), message.retain


async def test_online_status_is_published_retained(broker_port: int, device: SimulatedDevice) -> None:
    # A client that subscribes after the fact still learns the device is online.
    async with aiomqtt.Client("127.0.0.1", broker_port, identifier="observer") as observer:
        await observer.subscribe(topic_for("btn-1", Channel.status), qos=1)
        state, retained = await next_status(observer)
    assert state == {"state": "online"}
    assert retained


async def test_resends_until_received_then_stops(device: SimulatedDevice, platform_factory: Factory) -> None:
    platform = await platform_factory(
        ack_on_copy=2, then=(AckState.assigned, AckState.en_route, AckState.resolved)
    )
    record = device.raise_event("sos")
    await until(lambda: record.received and len(record.later) == 3)
    # Well past the next backoff step (10 s simulated = 100 ms real): no third copy.
    await asyncio.sleep(0.4)
    assert record.sends == 2
    assert record.resends == 1
    assert platform.copies[("btn-1", record.event_id)] == 2
    assert [a.state for a in record.later] == ["assigned", "en_route", "resolved"]
    assert record.latency_ms is not None and record.latency_ms >= 5000 / SPEED * 0.9
    assert not device.pending


async def test_event_ids_are_unique_and_carry_a_run_prefix(broker_port: int, device: SimulatedDevice) -> None:
    ids = [device.raise_event("test").event_id for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(i.startswith(device.run_id + "-") for i in ids)
    other = SimulatedDevice(spec(), host="127.0.0.1", port=broker_port, clock=Clock(SPEED))
    assert other.run_id != device.run_id


async def test_rejected_event_is_not_resent_and_keeps_the_reason(
    broker_port: int, platform_factory: Factory
) -> None:
    # Its first resend is due 3 s of real time later (300 simulated s at x100), so the
    # rejection is always back first: with the default 50 ms a busy CI machine once
    # delivered the rejection after the device had (rightly) resent.
    slow_resend = Scenario(resend=Backoff(initial_s=300.0, max_s=300.0))
    device = SimulatedDevice(
        spec(), host="127.0.0.1", port=broker_port, clock=Clock(SPEED), scenario=slow_resend
    )
    device.start()
    try:
        async with asyncio.timeout(5):
            await device.wait_online()
        platform = await platform_factory(reject="bad_value")
        record = device.raise_event("sos")
        await until(lambda: record.rejected)
        await asyncio.sleep(0.2)
        assert record.sends == 1 and platform.copies[("btn-1", record.event_id)] == 1
        assert record.rejected_reason == "bad_value"
        assert not device.pending
        await asyncio.sleep(3.2)  # past the resend that would have come had it not been rejected
        assert record.sends == 1
    finally:
        await device.stop()


async def test_will_fires_when_the_device_drops_and_events_wait_for_its_return(
    broker_port: int, device: SimulatedDevice, platform_factory: Factory
) -> None:
    async with aiomqtt.Client("127.0.0.1", broker_port, identifier="observer") as observer:
        await observer.subscribe(topic_for("btn-1", Channel.status), qos=1)
        assert (await next_status(observer))[0] == {"state": "online"}
        await device.go_silent()
        assert not device.online
        state, _ = await next_status(observer)
        assert state == {"state": "offline"}

        platform = await platform_factory()
        record = device.raise_event("fall")
        await asyncio.sleep(0.2)
        assert record.sends == 0  # silent devices say nothing

        device.come_back()
        assert (await next_status(observer))[0] == {"state": "online"}
        await until(lambda: record.received)
    assert platform.copies[("btn-1", record.event_id)] == 1
    assert device.drops == 1 and device.reconnects == 0


async def test_telemetry_at_heartbeat_and_config_changes_it(broker_port: int) -> None:
    sim = SimulatedDevice(spec("mat-1", "mattress"), host="127.0.0.1", port=broker_port, clock=Clock(600))
    async with aiomqtt.Client("127.0.0.1", broker_port, identifier="observer") as observer:
        await observer.subscribe(topic_for("mat-1", Channel.telemetry))
        sim.start()
        async with asyncio.timeout(5):
            message = await anext(observer.messages)
        assert isinstance(message.payload, bytes)
        body = json.loads(message.payload)
        assert {"presence", "motion"} <= set(body["metrics"])
        assert isinstance(body["ts"], int)
        config = json.dumps({"heartbeat_s": 30}).encode()
        await observer.publish(topic_for("mat-1", Channel.config), config, qos=1, retain=True)
        await until(lambda: sim.heartbeat_s == 30)
        assert sim.config == {"heartbeat_s": 30}
    await sim.stop()
    assert sim.telemetry_sent >= 1


async def test_reconnects_after_the_broker_goes_away_and_resends() -> None:
    port = free_port()
    broker = await start_broker(port)
    scenario = Scenario(reconnect=Backoff(initial_s=1, max_s=5))
    sim = SimulatedDevice(spec(), host="127.0.0.1", port=port, clock=Clock(SPEED), scenario=scenario)
    sim.start()
    try:
        async with asyncio.timeout(5):
            await sim.wait_online()
        await stop_broker(broker)
        await until(lambda: not sim.online)
        record = sim.raise_event("sos")
        broker = await start_broker(port)
        platform = FakePlatform(port)
        task = asyncio.create_task(platform.run())
        await until(lambda: record.received)
        assert sim.reconnects == 1
        assert platform.copies[("btn-1", record.event_id)] >= 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await sim.stop()
        await stop_broker(broker)

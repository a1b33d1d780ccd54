"""An in-process broker and a tiny fake platform, so simulator tests need no services."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiomqtt
import pytest
from amqtt.broker import Broker

from device_gateway.broker import _CareCallBroker
from device_gateway.protocol import AckState, Channel, ack_payload, topic_for
from tests.support.ports import free_port


def broker_config(port: int) -> dict[str, object]:
    # Only the anonymous-auth plugin: no $SYS broadcasts, no packet logging.
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def start_broker(port: int) -> Broker:
    """amqtt with the project's fixes (device_gateway.broker): stock 0.12.1 can lose a
    broadcast while a client subscribes and can leave connection tasks behind on shutdown,
    which hung this fixture's teardown now and then."""
    broker = _CareCallBroker(broker_config(port))
    await broker.start()
    return broker


async def stop_broker(broker: Broker) -> None:
    await asyncio.wait_for(broker.close(), 15)


@pytest.fixture
async def broker_port() -> AsyncIterator[int]:
    port = free_port()
    broker = await start_broker(port)
    try:
        yield port
    finally:
        await stop_broker(broker)


@dataclass
class FakePlatform:
    """Acks events the way the gateway would, with knobs to make it awkward.

    ``ack_on_copy`` = which copy of an event gets ``received`` (2 forces one resend);
    ``then`` = later states to send after ``received``; ``reject`` = reason to reject with.
    """

    port: int
    ack_on_copy: int = 1
    then: tuple[AckState, ...] = ()
    reject: str | None = None
    copies: Counter[tuple[str, str]] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        # The broker going away at teardown ends the platform; that is not a failure, and
        # a task that ends after the fixture stopped waiting must not log one.
        with contextlib.suppress(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", self.port, identifier="fake-platform") as client:
                await client.subscribe("carecall/v1/devices/+/events", qos=1)
                self.ready.set()
                async for message in client.messages:
                    await self._handle(client, message)

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        # amqtt 0.12.1 sends every new connection the retained messages of *all* sessions'
        # subscriptions, so a subscriber must check the topic, as the real gateway does.
        if not message.topic.matches("carecall/v1/devices/+/events"):
            return
        device_id = str(message.topic).split("/")[3]
        assert isinstance(message.payload, bytes)
        body = json.loads(message.payload)
        key = (device_id, body["id"])
        self.copies[key] += 1
        if self.copies[key] == 1:
            self.types[body["type"]] += 1
        ack_topic = topic_for(device_id, Channel.ack)
        if self.reject is not None:
            payload = ack_payload(body["id"], AckState.rejected, 1, self.reject)
            await client.publish(ack_topic, payload, qos=1)
            return
        if self.copies[key] < self.ack_on_copy:
            return
        await client.publish(ack_topic, ack_payload(body["id"], AckState.received, 1), qos=1)
        if self.copies[key] == self.ack_on_copy:
            for state in self.then:
                await client.publish(ack_topic, ack_payload(body["id"], state, 1), qos=1)


@pytest.fixture
async def platform_factory(
    broker_port: int,
) -> AsyncIterator[Callable[..., asyncio.Future[FakePlatform]]]:
    tasks: list[asyncio.Task[None]] = []

    async def make(**knobs: object) -> FakePlatform:
        platform = FakePlatform(broker_port, **knobs)  # type: ignore[arg-type]
        tasks.append(asyncio.create_task(platform.run()))
        await asyncio.wait_for(platform.ready.wait(), 5)
        return platform

    yield make  # type: ignore[misc]
    for task in tasks:
        task.cancel()
    # Bounded: a client whose broker stopped answering can sit in its DISCONNECT forever,
    # which hung this teardown now and then on a loaded machine.
    if tasks:
        await asyncio.wait(tasks, timeout=5)
    for task in tasks:
        if task.done() and not task.cancelled():
            with contextlib.suppress(aiomqtt.MqttError):
                task.result()


async def until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll a condition (real seconds): the simulator runs in the background."""
    async with asyncio.timeout(within_s):
        for _ in itertools.count():
            if predicate():
                return
            await asyncio.sleep(0.01)

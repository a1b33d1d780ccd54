"""The gateway end to end on the embedded broker and the test database (--db): telemetry
rules and liveness raise events through the same path as device events; bad input is
counted, not fatal."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.clock import Clock, SystemClock
from carecall.shell.app import create_app
from config.settings import load_settings
from device_gateway.broker import EmbeddedBroker
from device_gateway.credentials import hash_secret
from device_gateway.models import DeviceEvent, DeviceState
from device_gateway.mqtt import MqttTarget, connections
from device_gateway.service import Gateway
from dispatcher.registry.service import resident_vitals
from simulators.device import DeviceSpec, SimulatedDevice
from tests.conftest import add_small_registry

ROOT = "carecall/v1/devices"
SECRETS = {"mat": "mattress-secret-0123456789", "hub": "hub-secret-0123456789ab"}


@pytest.fixture
async def running(maker: async_sessionmaker[AsyncSession], db_url: str) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(
        maker,
        {"mat": "mattress", "hub": "hub"},
        secret_hashes={k: hash_secret(v) for k, v in SECRETS.items()},
        heartbeat_s=1,
    )
    broker = EmbeddedBroker(
        host="127.0.0.1", port=0, maker=maker, platform_username="platform", platform_password="pw-123456"
    )
    await broker.start()
    settings = load_settings(
        database_url=db_url,
        state_flush_interval_s=0.2,
        supervision_interval_s=0.2,
        offline_after_intervals=3,
    )
    gw = Gateway(
        settings=settings,
        maker=maker,
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=MqttTarget("127.0.0.1", broker.port, "platform", "pw-123456", tls=False),
        shared_group=None,
        residents=resident_vitals,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    await asyncio.wait_for(gw.connected.wait(), 10)
    yield {"gw": gw, "port": broker.port, "maker": maker}
    stop.set()
    await asyncio.wait_for(task, 15)
    await broker.stop()


def device(port: int, dev: str, *, will: bool = True) -> aiomqtt.Client:
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=dev,
        username=dev,
        password=SECRETS[dev],
        clean_session=True,
        will=aiomqtt.Will(f"{ROOT}/{dev}/status", b'{"state":"offline"}', qos=1, retain=True)
        if will
        else None,
    )


async def events(maker: async_sessionmaker[AsyncSession], **where: str) -> list[DeviceEvent]:
    async with maker() as s:
        stmt = select(DeviceEvent).order_by(DeviceEvent.id)
        for k, v in where.items():
            stmt = stmt.where(getattr(DeviceEvent, k) == v)
        return list((await s.scalars(stmt)).all())


async def wait_for(pred: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_vital_signs_out_of_range_raise_one_alert(running: dict[str, Any]) -> None:
    maker = running["maker"]
    async with device(running["port"], "mat") as c:
        for hr in (72, 140, 142, 145, 150, 148):  # level-3 resident: 3 readings out of range make an alarm
            body = {"ts": int(time.time() * 1000), "metrics": {"hr": hr, "rr": 16, "presence": "in_bed"}}
            await c.publish(f"{ROOT}/mat/telemetry", json.dumps(body), qos=1)

        async def alerted() -> bool:
            return bool(await events(maker, type="vital_alert"))

        await wait_for(alerted)
        await asyncio.sleep(0.5)
    alerts = await events(maker, type="vital_alert")
    assert len(alerts) == 1, "one episode, one event"
    a = alerts[0]
    assert a.source == "rule" and a.event_class == "emergency" and a.data["metric"] == "hr"
    async with maker() as s:
        state = await s.get(DeviceState, "mat")
    assert state is not None and state.metrics is not None and state.metrics["hr"] == 148
    # one trend point a minute for the console: six readings in a second give one point
    assert state.vitals_trend is not None and len(state.vitals_trend) == 1
    assert state.vitals_trend[0][1] == 72 and state.vitals_trend[0][2] == 16


async def test_will_raises_offline_once_and_return_raises_online(running: dict[str, Any]) -> None:
    maker = running["maker"]
    spec = DeviceSpec(device_id="hub", kind="hub", home_id="h1", secret=SECRETS["hub"], heartbeat_s=30)
    dev = SimulatedDevice(spec, host="127.0.0.1", port=running["port"], clock=Clock(1.0))
    dev.start()
    try:
        await asyncio.wait_for(dev.wait_online(), 10)
        await asyncio.sleep(0.5)
        await dev.go_silent()  # no DISCONNECT: the broker sends the will

        async def offline() -> bool:
            return bool(await events(maker, type="offline"))

        await wait_for(offline)
        dev.come_back()

        async def online() -> bool:
            return bool(await events(maker, type="online"))

        await wait_for(online)
    finally:
        await dev.stop()
    off, on = await events(maker, type="offline"), await events(maker, type="online")
    assert len(off) == 1 and off[0].data["cause"] == "will" and off[0].source == "supervision"
    assert len(on) == 1 and on[0].data["offline_s"] is not None


async def test_announce_then_will_within_one_flush_ends_offline(running: dict[str, Any]) -> None:
    """A device that says "online" and drops before the gateway's next flush is offline,
    with its offline event, not left online until it misses three heartbeats."""
    maker = running["maker"]
    spec = DeviceSpec(device_id="hub", kind="hub", home_id="h1", secret=SECRETS["hub"], heartbeat_s=30)
    dev = SimulatedDevice(spec, host="127.0.0.1", port=running["port"], clock=Clock(1.0))
    dev.start()
    try:
        await asyncio.wait_for(dev.wait_online(), 10)
        await dev.go_silent()  # at once: the online status and the will share one flush

        async def offline() -> bool:
            return bool(await events(maker, type="offline"))

        await wait_for(offline)
    finally:
        await dev.stop()
    off = await events(maker, type="offline")
    assert len(off) == 1 and off[0].data["cause"] == "will"
    async with maker() as s:
        state = await s.get(DeviceState, "hub")
    assert state is not None and state.online is False


async def test_silent_device_goes_offline_after_three_heartbeats(running: dict[str, Any]) -> None:
    maker = running["maker"]
    async with device(running["port"], "hub", will=False) as c:
        await c.publish(f"{ROOT}/hub/telemetry", b'{"metrics":{"rssi_dbm":-60}}', qos=1)
        t0 = time.monotonic()

        async def offline() -> bool:
            return bool(await events(maker, type="offline"))

        await wait_for(offline, 15)
        waited = time.monotonic() - t0
    [ev] = await events(maker, type="offline")
    assert ev.data["cause"] == "silent"
    assert 2.5 < waited < 6, f"heartbeat 1 s × 3 intervals, found after {waited:.1f} s"


async def test_bad_input_is_answered_and_counted_and_good_input_still_flows(running: dict[str, Any]) -> None:
    gw: Gateway = running["gw"]
    maker = running["maker"]
    async with device(running["port"], "hub") as c:
        await c.subscribe(f"{ROOT}/hub/ack", qos=1)
        await c.publish(f"{ROOT}/hub/events", b"{not json", qos=1)
        await c.publish(
            f"{ROOT}/hub/events",
            json.dumps({"id": "ok-1", "ts": int(time.time() * 1000), "type": "sos"}),
            qos=1,
        )
        got: list[dict[str, Any]] = []
        async for m in c.messages:
            got.append(json.loads(m.payload))  # type: ignore[arg-type]
            if len(got) == 2:
                break
    states = {g["state"] for g in got}
    assert states == {"rejected", "received"}
    assert gw.rejects.by_reason() == {"not_json": 1}
    assert [e.event_id for e in await events(maker, device_id="hub")] == ["ok-1"]


async def test_metrics_endpoint_counts_what_flowed(running: dict[str, Any]) -> None:
    import httpx

    async with device(running["port"], "hub") as c:
        await c.publish(f"{ROOT}/hub/telemetry", b'{"metrics":{"battery_pct":"lots"}}', qos=1)
        await c.publish(f"{ROOT}/hub/telemetry", b"\xff", qos=1)
        await asyncio.sleep(0.5)
    app = create_app(running["maker"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        text = (await http.get("/metrics")).text
        health = await http.get("/healthz")
    assert 'carecall_gateway_rejected_total{reason="not_utf8"}' in text
    assert "carecall_gateway_messages_total" in text
    assert health.status_code == 200


def _gateway_for_subscriptions(shared: str | None, telemetry_qos: int) -> Gateway:
    return Gateway(
        settings=load_settings(database_url="sqlite+aiosqlite:///:memory:"),
        maker=None,  # type: ignore[arg-type]  # not touched by the subscriptions
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=MqttTarget("127.0.0.1", 1883, None, None, tls=False),
        shared_group=shared,
        residents=resident_vitals,
        telemetry_qos=telemetry_qos,
    )


def test_telemetry_is_subscribed_at_qos0_and_events_status_at_qos1() -> None:
    gw = _gateway_for_subscriptions("grp", 0)
    subs = dict(gw.subscriptions)
    # readings (and any unknown channel, to be counted) on a QoS 0 connection of their own
    assert subs[f"$share/grp/{ROOT}/+/+"] == 0
    assert dict(connections(gw.subscriptions))["telemetry"] == [(f"$share/grp/{ROOT}/+/+", 0)]
    assert (f"$share/grp/{ROOT}/+/+", 0) not in dict(connections(gw.subscriptions))["main"]
    assert subs[f"$share/grp/{ROOT}/+/events"] == 1
    assert subs[f"$share/grp/{ROOT}/+/status"] == 1
    # bad topics of other depths still reach the gateway (and are counted)
    assert subs[f"$share/grp/{ROOT}/+/+/+/#"] == 1 and subs[f"$share/grp/{ROOT}/+"] == 1
    assert dict(_gateway_for_subscriptions(None, 1).subscriptions) == {
        f"{ROOT}/+/+": 1,
        f"{ROOT}/+/+/+/#": 1,
        f"{ROOT}/+": 1,
    }
    with pytest.raises(ValueError, match="telemetry_qos"):
        _gateway_for_subscriptions(None, 2)

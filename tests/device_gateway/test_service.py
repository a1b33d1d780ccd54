"""The gateway end to end on the embedded broker and SQLite: telemetry rules and liveness
raise events through the same path as device events; bad input is counted, not fatal."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from config.settings import load_settings
from device_gateway.broker import EmbeddedBroker
from device_gateway.credentials import hash_secret
from device_gateway.service import Gateway, MqttTarget
from dispatcher.api import create_app
from dispatcher.bus import MemoryBus
from dispatcher.clock import Clock, SystemClock
from dispatcher.models import DeviceEvent, DeviceState
from simulators.device import DeviceSpec, SimulatedDevice
from tests.conftest import add_small_registry

ROOT = "carecall/v1/devices"
SECRETS = {"mat": "mattress-secret-0123456789", "hub": "hub-secret-0123456789ab"}


@pytest.fixture
async def running(maker: async_sessionmaker[AsyncSession], sqlite_url: str) -> AsyncIterator[dict[str, Any]]:
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
        database_url=sqlite_url,
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


async def test_uplink_queue_serves_alarms_before_queued_telemetry() -> None:
    from device_gateway.service import UplinkQueue

    q = UplinkQueue()
    for i in range(3):
        q.put_nowait(aiomqtt.Message(f"{ROOT}/d/telemetry", str(i).encode(), 0, False, 1, None))
    q.put_nowait(aiomqtt.Message(f"{ROOT}/d/events", b"sos", 1, False, 2, None))
    q.put_nowait(aiomqtt.Message(f"{ROOT}/d/status", b"on", 1, False, 3, None))
    assert q.qsize() == 5 and not q.empty()
    order = [(await q.get()).topic.value.rsplit("/", 1)[1] for _ in range(5)]
    assert order == ["events", "status", "telemetry", "telemetry", "telemetry"]
    assert q.empty()
    # retained messages (replayed on subscribe) wait behind live ones too
    q.put_nowait(aiomqtt.Message(f"{ROOT}/old/status", b"off", 1, True, 4, None))
    q.put_nowait(aiomqtt.Message(f"{ROOT}/d/events", b"sos", 1, False, 5, None))
    assert [(await q.get()).topic.value for _ in range(2)] == [f"{ROOT}/d/events", f"{ROOT}/old/status"]


# --------------------------------------------------------------------------- hot path

_metric_value = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
_telemetry_obj = st.fixed_dictionaries(
    {"metrics": st.dictionaries(st.text(max_size=70), _metric_value, max_size=70)},
    optional={
        "ts": st.one_of(st.integers(min_value=0, max_value=5 * 10**12), st.text(max_size=10), st.booleans()),
        "extra": st.text(max_size=5),
    },
)


@given(obj=_telemetry_obj)
@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fast_telemetry_path_accepts_only_what_the_parser_accepts_alike(obj: dict[str, Any]) -> None:
    """The hot path may decline anything, but what it accepts the full parser accepts with
    exactly the same metrics (or every reading would bypass validation)."""
    from device_gateway import protocol as p
    from device_gateway.service import fast_telemetry_metrics

    payload = json.dumps(obj, allow_nan=True).encode()
    fast = fast_telemetry_metrics(payload, p.MAX_PAYLOAD_BYTES)
    if fast is None:
        return
    full = p.parse_telemetry(payload)
    assert isinstance(full, p.TelemetryMessage), full
    assert fast == full.metrics
    assert [type(v) for v in fast.values()] == [type(v) for v in full.metrics.values()]


@given(payload=st.binary(max_size=300))
@hsettings(max_examples=300, deadline=None)
def test_fast_telemetry_path_never_accepts_what_the_parser_rejects(payload: bytes) -> None:
    from device_gateway import protocol as p
    from device_gateway.service import fast_telemetry_metrics

    if fast_telemetry_metrics(payload, p.MAX_PAYLOAD_BYTES) is not None:
        assert isinstance(p.parse_telemetry(payload), p.TelemetryMessage)


def test_fast_telemetry_path_takes_ordinary_readings_and_declines_the_odd_ones() -> None:
    from device_gateway.service import fast_telemetry_metrics

    ok = b'{"ts":1764120600123,"metrics":{"hr":68,"rr":15.5,"presence":"in_bed","bed":true}}'
    assert fast_telemetry_metrics(ok, 16384) == {"hr": 68, "rr": 15.5, "presence": "in_bed", "bed": True}
    for odd in (
        b'{"ts":"2026-11-26T10:00:00+08:00","metrics":{"hr":1}}',  # RFC 3339: full parser
        b'{"metrics":{"hr":1},"fw":"1.2"}',  # extra top-level field
        b'{"metrics":{"note":"\\u00e9"}}',  # non-ASCII
        b'{"metrics":{"hr":NaN}}',
        b'{"metrics":{"hr":{"x":1}}}',
        b'{"metrics":{"fw":"' + b"x" * 65 + b'"}}',
        b"\xff",
        b'{"ts":12,"metrics":{}}',
    ):
        assert fast_telemetry_metrics(odd, 16384) is None, odd


def _gateway_for_subscriptions(shared: str | None, telemetry_qos: int) -> Gateway:
    return Gateway(
        settings=load_settings(database_url="sqlite+aiosqlite:///:memory:"),
        maker=None,  # type: ignore[arg-type]  # not touched by _subscriptions
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=MqttTarget("127.0.0.1", 1883, None, None, tls=False),
        shared_group=shared,
        telemetry_qos=telemetry_qos,
    )


def test_telemetry_is_subscribed_at_qos0_and_events_status_at_qos1() -> None:
    gw = _gateway_for_subscriptions("grp", 0)
    subs = dict(gw._subscriptions())
    # readings (and any unknown channel, to be counted) on a QoS 0 connection of their own
    assert subs[f"$share/grp/{ROOT}/+/+"] == 0
    assert dict(gw._connections())["telemetry"] == [(f"$share/grp/{ROOT}/+/+", 0)]
    assert (f"$share/grp/{ROOT}/+/+", 0) not in dict(gw._connections())["main"]
    assert subs[f"$share/grp/{ROOT}/+/events"] == 1
    assert subs[f"$share/grp/{ROOT}/+/status"] == 1
    # bad topics of other depths still reach the gateway (and are counted)
    assert subs[f"$share/grp/{ROOT}/+/+/+/#"] == 1 and subs[f"$share/grp/{ROOT}/+"] == 1
    assert dict(_gateway_for_subscriptions(None, 1)._subscriptions()) == {
        f"{ROOT}/+/+": 1,
        f"{ROOT}/+/+/+/#": 1,
        f"{ROOT}/+": 1,
    }
    with pytest.raises(ValueError, match="telemetry_qos"):
        _gateway_for_subscriptions(None, 2)


def test_load_generator_telemetry_is_valid_telemetry() -> None:
    """The bench's readings must be telemetry the gateway accepts, not rejections."""
    from device_gateway import protocol as p
    from device_gateway.service import fast_telemetry_metrics
    from simulators.loadgen import LoadGenerator

    gen = LoadGenerator("127.0.0.1", 1)
    sent: list[bytes] = []
    gen._publish = lambda _topic, payload, _qos: sent.append(payload)  # type: ignore[method-assign]
    for pad in (0, 200, 1000):
        gen.telemetry("d1", pad_to=pad)
        assert len(sent[-1]) >= pad
        assert isinstance(p.parse_telemetry(sent[-1]), p.TelemetryMessage)
        assert fast_telemetry_metrics(sent[-1], p.MAX_PAYLOAD_BYTES) is not None

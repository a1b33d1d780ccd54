"""The gateway's lanes (issue 15): which broker connections and subscriptions each lane
opens, which channels it takes, and that a lane copy names itself and its group apart."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.clock import SystemClock
from config.settings import SettingsError, load_settings
from device_gateway import protocol as p
from device_gateway.broker import EmbeddedBroker
from device_gateway.credentials import hash_secret
from device_gateway.lanes import Lane, lane_group, lane_name, lane_plan, lane_takes
from device_gateway.models import DeviceState
from device_gateway.mqtt import MqttTarget, connections, subscriptions
from device_gateway.service import Gateway
from dispatcher.registry.service import resident_vitals
from tests.conftest import add_small_registry
from tests.device_gateway.test_service import SECRETS, device, events, wait_for

ROOT = p.TOPIC_PREFIX


def _filters(lane: Lane, qos: int = 0, group: str | None = "grp") -> dict[str, int]:
    return {t: q for c in lane_plan(lane, telemetry_qos=qos, shared_group=group) for t, q in c.subscriptions}


def test_the_events_lane_subscribes_to_alarms_only_never_to_readings() -> None:
    plan = lane_plan(Lane.events, telemetry_qos=0, shared_group="grp")
    assert [(c.role, c.primary) for c in plan] == [("main", True)]
    assert _filters(Lane.events) == {
        f"$share/grp-events/{ROOT}/+/events": 1,
        f"$share/grp-events/{ROOT}/+/status": 1,
        f"$share/grp-events/{ROOT}/+/+/+/#": 1,
        f"$share/grp-events/{ROOT}/+": 1,
    }
    # no filter of the events lane matches a telemetry topic (nor any five-level wildcard)
    assert not any(t.endswith(("/+/+", "/telemetry")) for t in _filters(Lane.events))


@pytest.mark.parametrize("qos", [0, 1])
def test_the_readings_lane_subscribes_to_telemetry_only(qos: int) -> None:
    plan = lane_plan(Lane.readings, telemetry_qos=qos, shared_group="grp")
    assert [(c.role, c.primary) for c in plan] == [("telemetry", True)]
    assert _filters(Lane.readings, qos) == {f"$share/grp-readings/{ROOT}/+/telemetry": qos}


def test_the_lanes_share_groups_of_their_own_and_plain_without_a_group() -> None:
    assert lane_group(Lane.all, "g") == "g"
    assert lane_group(Lane.events, "g") == "g-events"
    assert lane_group(Lane.readings, "g") == "g-readings"
    assert lane_group(Lane.events, None) is None and lane_group(Lane.readings, "") is None
    assert _filters(Lane.events, group=None)[f"{ROOT}/+/events"] == 1
    assert _filters(Lane.readings, group=None) == {f"{ROOT}/+/telemetry": 0}


@pytest.mark.parametrize("qos", [0, 1])
def test_the_all_lane_is_the_one_process_layout_as_before(qos: int) -> None:
    plan = lane_plan(Lane.all, telemetry_qos=qos, shared_group="grp")
    before = connections(subscriptions(telemetry_qos=qos, shared_group="grp"))
    assert [(c.role, list(c.subscriptions)) for c in plan] == before
    assert [c.primary for c in plan] == [c.role == "main" for c in plan]


@pytest.mark.parametrize("group", [None, "grp"])
def test_on_a_broker_that_names_channels_the_readings_connection_takes_readings_only(
    group: str | None,
) -> None:
    """The embedded broker refuses unnamed channels, so its gateway subscribes by name: no
    QoS 0 copy of every event, ack and config on the readings connection (issue 15)."""
    plan = lane_plan(Lane.all, telemetry_qos=0, shared_group=group, by_name=True)
    assert [(c.role, c.primary) for c in plan] == [("main", True), ("telemetry", False)]
    unshared = [{t.split("/", 2)[2] if group else t: q for t, q in c.subscriptions} for c in plan]
    assert unshared == [_filters(Lane.events, group=None), {f"{ROOT}/+/telemetry": 0}]
    if group:
        assert all(t.startswith(f"$share/{group}/") for c in plan for t, _q in c.subscriptions)


def test_a_gateway_on_a_broker_that_names_channels_subscribes_by_name() -> None:
    assert MqttTarget.from_url("mqtt://127.0.0.1:1883").named_channels is False
    gw = _gateway(Lane.all, MqttTarget("127.0.0.1", 1, None, None, tls=False, named_channels=True))
    assert {t for c in gw.plan if c.role == "telemetry" for t, _q in c.subscriptions} == {
        f"$share/grp/{ROOT}/+/telemetry"
    }


def test_each_lane_takes_its_own_channels() -> None:
    uplink = [p.Channel.events, p.Channel.status, p.Channel.telemetry]
    assert [lane_takes(Lane.all, c) for c in uplink] == [True, True, True]
    assert [lane_takes(Lane.events, c) for c in uplink] == [True, True, False]
    assert [lane_takes(Lane.readings, c) for c in uplink] == [False, False, True]


def test_lane_copies_have_names_and_client_ids_of_their_own() -> None:
    assert lane_name("a", Lane.all) == "gateway-a"
    assert lane_name("a", Lane.events) == "gateway-a-events"
    assert lane_name("a", Lane.readings) == "gateway-a-readings"


def _gateway(lane: Lane, mqtt: MqttTarget | None = None) -> Gateway:
    return Gateway(
        settings=load_settings(database_url="sqlite+aiosqlite:///:memory:", instance="x"),
        maker=None,  # type: ignore[arg-type]  # not touched here
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=mqtt or MqttTarget("127.0.0.1", 1883, None, None, tls=False),
        shared_group="grp",
        residents=resident_vitals,
        lane=lane,
    )


def test_a_gateway_of_a_lane_uses_that_lanes_plan_group_and_name() -> None:
    gw = _gateway(Lane.readings)
    assert gw.name == "gateway-x-readings" and gw.shared_group == "grp-readings"
    assert gw.subscriptions == [(f"$share/grp-readings/{ROOT}/+/telemetry", 0)]
    assert _gateway(Lane.all).name == "gateway-x"


def test_the_lane_setting_is_checked_and_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECALL_GATEWAY_LANE", "readings")
    assert load_settings().gateway_lane == "readings"
    assert load_settings(gateway_lane="events").gateway_lane == "events"
    with pytest.raises(SettingsError, match="GATEWAY_LANE"):
        load_settings(gateway_lane="alarms")
    with pytest.raises(SettingsError, match="readings_drop_above"):
        load_settings(readings_shed_above=100, readings_drop_above=10)


@pytest.fixture
async def two_lanes(maker: async_sessionmaker[AsyncSession], db_url: str) -> AsyncIterator[dict[str, Any]]:
    """An ``events`` and a ``readings`` gateway on one embedded broker and the test database."""
    await add_small_registry(
        maker,
        {"mat": "mattress", "hub": "hub"},
        secret_hashes={k: hash_secret(v) for k, v in SECRETS.items()},
    )
    broker = EmbeddedBroker(
        host="127.0.0.1", port=0, maker=maker, platform_username="platform", platform_password="pw-123456"
    )
    await broker.start()
    settings = load_settings(database_url=db_url, state_flush_interval_s=0.2, instance="t")
    gws = {
        lane: Gateway(
            settings=settings,
            maker=maker,
            bus=MemoryBus(),
            clock=SystemClock(),
            mqtt=MqttTarget("127.0.0.1", broker.port, "platform", "pw-123456", tls=False),
            shared_group=None,
            residents=resident_vitals,
            lane=lane,
        )
        for lane in (Lane.events, Lane.readings)
    }
    stop = asyncio.Event()
    tasks = [asyncio.create_task(gw.run(stop)) for gw in gws.values()]
    for gw in gws.values():
        await asyncio.wait_for(gw.connected.wait(), 10)
    yield {"events": gws[Lane.events], "readings": gws[Lane.readings], "port": broker.port}
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 15)
    await broker.stop()


async def test_alarms_and_readings_each_reach_their_own_lane_only(
    two_lanes: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    ev, rd = two_lanes["events"], two_lanes["readings"]
    async with device(two_lanes["port"], "mat", will=False) as c:
        await c.subscribe(f"{ROOT}/mat/ack", qos=1)
        for hr in (140, 142, 145):  # three out of range: the readings lane's rules raise the alarm
            body = {"ts": int(time.time() * 1000), "metrics": {"hr": hr, "rr": 16, "presence": "in_bed"}}
            await c.publish(f"{ROOT}/mat/telemetry", json.dumps(body), qos=1)
        await c.publish(
            f"{ROOT}/mat/events",
            json.dumps({"id": "s-1", "ts": int(time.time() * 1000), "type": "sos"}),
            qos=1,
        )
        async with asyncio.timeout(10):
            async for msg in c.messages:
                ack = json.loads(msg.payload)  # type: ignore[arg-type]
                if ack.get("event_id") == "s-1" and ack.get("state") == "received":
                    break

        async def alerted() -> bool:
            return bool(await events(maker, type="vital_alert"))

        await wait_for(alerted)
    assert ev.stats.channels.get("telemetry", 0) == 0 and ev.stats.off_lane == 0
    assert ev.stats.channels.get("events") == 1 and ev.stats.acks >= 1
    assert rd.stats.channels == {"telemetry": 3} and rd.stats.off_lane == 0
    (sos,) = await events(maker, event_id="s-1")
    (alert,) = await events(maker, type="vital_alert")
    assert sos.gateway == "gateway-t-events" and alert.gateway == "gateway-t-readings"

    async def stored() -> bool:  # the readings lane's state flush
        async with maker() as s:
            state = await s.get(DeviceState, "mat")
        return state is not None and state.metrics is not None and state.metrics["hr"] == 145

    await wait_for(stored)

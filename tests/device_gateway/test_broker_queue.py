"""The embedded broker delivers alarms before readings (device_gateway/broker_queue.py).

amqtt's one FIFO of broadcasts made a storm's SOS, and its ack, wait behind every reading
queued before it in the one-process target (issue 15)."""

from __future__ import annotations

from typing import Any

from device_gateway.broker import _CareCallBroker
from device_gateway.broker_queue import AlarmsFirstQueue

ROOT = "carecall/v1/devices"


def _msg(device: str, channel: str, n: int) -> dict[str, Any]:
    return {"session": None, "topic": f"{ROOT}/{device}/{channel}", "data": str(n).encode()}


def test_alarms_acks_and_status_go_before_readings_each_in_order() -> None:
    q = AlarmsFirstQueue()
    sent = [
        _msg("d1", "telemetry", 1),
        _msg("d2", "telemetry", 2),
        _msg("d3", "events", 3),
        _msg("d1", "telemetry", 4),
        _msg("d3", "ack", 5),
        _msg("d4", "status", 6),
        _msg("d2", "events", 7),
    ]
    for m in sent:
        q.put_nowait(m)
    assert q.qsize() == len(sent)
    got = [int(q.get_nowait()["data"]) for _ in sent]
    assert got == [3, 5, 6, 7, 1, 2, 4]
    assert q.empty()


async def test_the_embedded_broker_broadcasts_through_it() -> None:
    broker = _CareCallBroker(
        {"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:0"}}, "plugins": {}}
    )
    assert isinstance(broker._broadcast_queue, AlarmsFirstQueue)


async def test_a_platform_client_keeps_its_targets_qos1_window() -> None:
    """The embedded broker shares the loop: its window is wide (a PUBACK costs loop turns,
    and 200 held a storm's acks in the gateway until the devices resent); other brokers
    keep paho's 200."""
    from device_gateway.mqtt import MqttTarget, mqtt_client

    plain = MqttTarget("127.0.0.1", 1883, None, None, tls=False)
    wide = MqttTarget("127.0.0.1", 1883, None, None, tls=False, max_inflight=5_000)
    assert mqtt_client(plain, "a", clean_session=True)._client.max_inflight_messages == 200
    assert mqtt_client(wide, "b", clean_session=True)._client.max_inflight_messages == 5_000


async def test_the_embedded_brokers_target_names_channels_and_opens_the_window(tmp_path: Any) -> None:
    from carecall.shell.runtime import EMBEDDED_INFLIGHT, embedded_broker, open_core
    from config.settings import load_settings

    core = await open_core(load_settings(database_url=f"sqlite:///{tmp_path / 'b.db'}"), migrate=False)
    try:
        async with embedded_broker(core, host="127.0.0.1", port=0) as target:
            assert target.named_channels
            assert target.max_inflight == EMBEDDED_INFLIGHT > 200
    finally:
        await core.close()

"""The gateway's broker connections (device_gateway/mqtt.py): the order messages are taken in."""

from __future__ import annotations

import aiomqtt

from device_gateway.mqtt import UplinkQueue

ROOT = "carecall/v1/devices"


async def test_uplink_queue_serves_alarms_before_queued_telemetry() -> None:

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


async def test_uplink_queue_lets_devices_take_turns_so_a_flood_queues_behind_itself() -> None:

    q = UplinkQueue()
    for i in range(1000):  # one device's junk already waiting
        q.put_nowait(aiomqtt.Message(f"{ROOT}/flood/events", str(i).encode(), 1, False, i, None))
    q.put_nowait(aiomqtt.Message(f"{ROOT}/other/events", b"sos", 1, False, 1001, None))
    q.put_nowait(aiomqtt.Message(f"{ROOT}/other/status", b"on", 1, False, 1002, None))
    assert q.qsize() == 1002
    got = [await q.get() for _ in range(4)]
    assert [(m.topic.value.split("/")[3], m.payload) for m in got] == [
        ("flood", b"0"),
        ("other", b"sos"),
        ("flood", b"1"),
        ("other", b"on"),
    ], "the other device waits for one junk message, not a thousand; each device in order"
    rest = [(await q.get()).payload for _ in range(998)]
    assert rest == [str(i).encode() for i in range(2, 1000)] and q.empty()

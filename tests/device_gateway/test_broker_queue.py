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

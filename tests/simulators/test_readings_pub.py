"""The bench's lean readings publisher (simulators/readings_pub.py): what it writes is MQTT
a real broker takes, every reading arrives as the loadgen's payload, every PUBACK is
counted once however the reads split them, and a refusal is an error."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import aiomqtt
import pytest

from simulators.loadgen import ROOT, telemetry_payload
from simulators.readings_pub import ReadingsPublisher, run_paced


async def test_readings_reach_a_broker_and_are_all_acknowledged(broker_port: int) -> None:
    devices = ["rp-1", "rp-2", "rp-3"]
    got: list[tuple[str, bytes]] = []
    async with aiomqtt.Client("127.0.0.1", broker_port, identifier="rp-watch") as watch:
        await watch.subscribe(f"{ROOT}/+/telemetry", qos=1)

        async def collect() -> None:
            async for msg in watch.messages:
                got.append((str(msg.topic), bytes(msg.payload)))  # type: ignore[arg-type]

        collector = asyncio.create_task(collect())
        pub = ReadingsPublisher("127.0.0.1", broker_port, client_id="rp-send")
        await asyncio.to_thread(pub.connect)
        sent = await asyncio.to_thread(run_paced, pub, devices=devices, per_s=1000, duration_s=0.3)
        for _ in range(500):
            if pub.acked >= sent and len(got) >= sent:
                break
            await asyncio.sleep(0.02)
            pub.flush()
        collector.cancel()
        await asyncio.to_thread(pub.close)
    assert sent == 300 and pub.acked == sent and pub.inflight == 0 and len(got) == sent
    assert {t for t, _ in got} == {f"{ROOT}/{d}/telemetry" for d in devices}
    first = json.loads(got[0][1])
    assert got[0][1] == telemetry_payload(1, first["ts"])  # the loadgen's reading, byte for byte
    assert all(len(p) == 200 for _, p in got)


def _pair() -> tuple[ReadingsPublisher, socket.socket]:
    ours, broker = socket.socketpair()
    pub = ReadingsPublisher("127.0.0.1", 1, client_id="x")
    ours.setblocking(False)
    pub._sock = ours
    return pub, broker


def test_pubacks_split_across_reads_are_counted_once() -> None:
    pub, broker = _pair()
    for _ in range(5):
        pub.publish("t", b"p")
    pub.flush()
    assert pub.sent == 5 and pub.inflight == 5
    acks = b"".join(bytes([0x40, 2, 0, i]) for i in range(1, 6))
    for piece in (acks[:1], acks[1:7], acks[7:13], acks[13:]):
        broker.sendall(piece)
        pub.flush()
    assert pub.acked == 5 and pub.inflight == 0
    broker.close()
    with pytest.raises(ConnectionError):
        pub.flush()


def test_a_refused_connection_raises() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def refuse() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(bytes([0x20, 2, 0, 5]))  # CONNACK: not authorized
        conn.close()

    t = threading.Thread(target=refuse)
    t.start()
    try:
        with pytest.raises(ConnectionError, match="refused"):
            ReadingsPublisher("127.0.0.1", port, client_id="x", username="u", password="p").connect(5)
    finally:
        t.join(5)
        server.close()


def test_it_refuses_a_broker_off_this_machine() -> None:
    with pytest.raises(ValueError):
        ReadingsPublisher("10.1.2.3", 1883, client_id="x")

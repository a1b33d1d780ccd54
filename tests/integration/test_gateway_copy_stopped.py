"""Two gateway copies share the load; one is stopped for good (SIGTERM, or SIGKILL): every
device's next SOS, sent once, is acked ``received`` within 5 s by the copy that is left
(issue 10, item 4). A persistent session of the dead copy kept its place in the shared
group and the broker queued part of every device's messages for it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.conftest import add_small_registry
from tests.integration.test_gateway_real_services import forget_session, start_gateway

pytestmark = pytest.mark.integration

ROOT = "carecall/v1/devices"
DEVICES = 150
ACK_WITHIN_S = 5.0


def log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


async def wait_connected(log: Path, timeout: float = 60.0) -> None:
    """Until the copy's log says its QoS 1 connection is up (subscribed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = await asyncio.to_thread(log_text, log)
        if any(
            '"gateway.connected"' in line and '"connection": "main"' in line for line in text.splitlines()
        ):
            return
        await asyncio.sleep(0.2)
    tail = (await asyncio.to_thread(log_text, log))[-2000:]
    raise AssertionError(f"gateway did not connect; log:\n{tail}")


def stop_for_good(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_stopped_gateway_copy_delays_no_alarm(
    sig: signal.Signals,
    mosquitto: tuple[str, int],
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    tmp_path: Path,
) -> None:
    host, port = mosquitto
    run = uuid.uuid4().hex[:6]
    ids = [f"cp{run}-{i:03d}" for i in range(DEVICES)]
    await add_small_registry(pg_maker, dict.fromkeys(ids, "button"))
    group = f"grp-{run}"
    instances = [f"a-{run}", f"b-{run}"]
    logs = [tmp_path / f"{i}.log" for i in instances]
    procs = [
        start_gateway(pg_url, redis_url, i, group, host, port, lg)
        for i, lg in zip(instances, logs, strict=True)
    ]
    try:
        for lg in logs:
            await wait_connected(lg)
        stop_for_good(procs[1], sig)  # copy B never comes back
        await asyncio.sleep(1.0)

        sent: dict[str, float] = {}
        acked: dict[str, float] = {}
        async with aiomqtt.Client(host, port, identifier=f"acks-{run}", clean_session=True) as reader:
            await reader.subscribe(f"{ROOT}/+/ack", qos=1)

            async def read() -> None:
                async for m in reader.messages:
                    device = m.topic.value.split("/")[3]
                    body = json.loads(m.payload)  # type: ignore[arg-type]
                    if device in sent and body.get("state") == "received" and device not in acked:
                        acked[device] = time.monotonic() - sent[device]

            task = asyncio.create_task(read())
            async with aiomqtt.Client(host, port, identifier=f"sender-{run}", clean_session=True) as c:
                for d in ids:  # one SOS per device, sent once: no resend
                    body = json.dumps({"id": f"{d}-sos", "ts": int(time.time() * 1000), "type": "sos"})
                    sent[d] = time.monotonic()
                    await c.publish(f"{ROOT}/{d}/events", body, qos=1)
                    await asyncio.sleep(0.01)
                deadline = time.monotonic() + ACK_WITHIN_S + 1
                while len(acked) < DEVICES and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
            task.cancel()
        late = sorted(d for d in ids if acked.get(d, float("inf")) > ACK_WITHIN_S)
        ms = sorted(v * 1000 for v in acked.values())
        print(
            f"\n{sig.name}: {len(acked)}/{DEVICES} SOS acked after one copy stopped; "
            f"median {statistics.median(ms) if ms else float('nan'):.1f} ms, "
            f"max {ms[-1] if ms else float('nan'):.1f} ms; {len(late)} not within {ACK_WITHIN_S} s"
        )
        assert not late, f"{len(late)} SOS waited for the stopped copy, e.g. {late[:5]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_for_good(proc, signal.SIGTERM)
        for i in instances:
            with contextlib.suppress(Exception):
                await forget_session(host, port, f"carecall-gateway-{i}")


async def test_a_will_fired_while_no_gateway_was_connected_is_taken_on_reconnect(
    mosquitto: tuple[str, int],
    pg_url: str,
    pg_maker: async_sessionmaker[AsyncSession],
    redis_url: str,
    leave_no_retained: set[str],
) -> None:
    """Clean sessions keep nothing queued for an absent gateway; the will is retained, so
    the broker replays it when the gateway subscribes again and the outage is raised."""
    import socket

    import paho.mqtt.client as paho
    from sqlalchemy import select

    from device_gateway.models import DeviceEvent, DeviceState
    from tests.integration.conftest import running_gateway

    host, port = mosquitto
    run = uuid.uuid4().hex[:6]
    dev = f"wl{run}-hub"
    leave_no_retained.add(dev)  # its will, and the config the gateway answers "online" with
    await add_small_registry(pg_maker, {dev: "hub"})
    status = f"{ROOT}/{dev}/status"
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=dev)
    c.will_set(status, b'{"state":"offline"}', qos=1, retain=True)

    async def state_online() -> bool | None:
        async with pg_maker() as s:
            st = await s.get(DeviceState, dev)
            return None if st is None else st.online

    try:
        async with running_gateway(mosquitto, pg_url, pg_maker, redis_url, instance=f"will-{run}"):
            c.connect(host, port)
            c.loop_start()
            c.publish(status, b'{"state":"online"}', qos=1, retain=True).wait_for_publish(10)
            deadline = time.monotonic() + 15
            while await state_online() is not True:
                assert time.monotonic() < deadline, "the device is seen online"
                await asyncio.sleep(0.2)
        # no gateway now: the device drops without DISCONNECT, the broker fires its will
        sock = c.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        c.loop_stop()
        await asyncio.sleep(1.0)
        async with running_gateway(mosquitto, pg_url, pg_maker, redis_url, instance=f"will-{run}"):
            deadline = time.monotonic() + 15
            while True:
                async with pg_maker() as s:
                    ev = await s.scalar(
                        select(DeviceEvent).where(DeviceEvent.device_id == dev, DeviceEvent.type == "offline")
                    )
                if ev is not None:
                    break
                assert time.monotonic() < deadline, "the will that fired meanwhile raises the outage"
                await asyncio.sleep(0.2)
        assert ev.data["cause"] == "will"
        assert await state_online() is False
    finally:
        with contextlib.suppress(Exception):
            c.loop_stop()

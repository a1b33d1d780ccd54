"""Platform processes for integration tests: a private Mosquitto, ``carecall gateway`` and
``carecall dispatcher`` as subprocesses on the real services, a registered county, and a
device that sends events and waits for their acks.

Every process here is started by the test and stopped by its PID, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.models import Device
from dispatcher.registry.models import Home, Resident, Staff, Station
from tests.integration.own_mosquitto import find_mosquitto
from tests.support.ports import free_port

ROOT = "carecall/v1/devices"


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"process exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listens on {port}:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it does not end; only the process we started, by its PID."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout_s)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- Mosquitto


@dataclass
class PrivateBroker:
    """A Mosquitto of our own on a free port (anonymous, no persistence), restartable on
    the same port: for tests that stop the broker under the platform."""

    port: int
    log: Path
    conf: Path
    binary: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_listening(self.port, self.proc, self.log)

    def stop(self) -> None:
        """SIGTERM: Mosquitto's graceful stop (it publishes the wills of connected clients)."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@contextlib.contextmanager
def private_broker(log_dir: Path) -> Iterator[PrivateBroker]:
    binary = find_mosquitto()
    # not under pytest's 0700 tmp tree: Mosquitto may drop to its own user
    conf_dir = Path(tempfile.mkdtemp(prefix="carecall-mosq-"))
    port = free_port()
    conf = conf_dir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n",
        encoding="utf-8",
    )
    conf_dir.chmod(0o755)
    conf.chmod(0o644)
    broker = PrivateBroker(port=port, log=log_dir / f"mosquitto-{port}.log", conf=conf, binary=binary)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(conf_dir, ignore_errors=True)


# --------------------------------------------------------------------------- platform


def platform_env(
    *, pg_url: str, redis_url: str, mqtt_port: int, group: str, timer_poll_s: float = 0.2
) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        CARECALL_DATABASE_URL=pg_url,
        CARECALL_REDIS_URL=redis_url,
        CARECALL_MQTT_URL=f"mqtt://127.0.0.1:{mqtt_port}",
        CARECALL_MQTT_SHARED_GROUP=group,
        CARECALL_TIMER_POLL_S=str(timer_poll_s),
        CARECALL_LOG_FORMAT="json",
    )
    return e


def start(role: str, env: dict[str, str], instance: str, log: Path) -> subprocess.Popen[bytes]:
    """``carecall gateway`` or ``carecall dispatcher`` as a subprocess, output to ``log``."""
    assert role in ("gateway", "dispatcher")
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "carecall.shell.cli", role, "--instance", instance],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


def log_events(log: Path) -> list[dict[str, object]]:
    """The JSON log lines of a process (other lines skipped)."""
    out: list[dict[str, object]] = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            row = json.loads(line)
            if isinstance(row, dict):
                out.append(row)
    return out


async def wait_log(log: Path, event: str, timeout_s: float, count: int = 1) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(1 for r in log_events(log) if r.get("event") == event) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"no {event!r} in {log.name} within {timeout_s} s:\n{tail(log)}")
        await asyncio.sleep(0.1)


@dataclass(frozen=True)
class County:
    station: str
    homes: list[str]
    devices: list[str]


async def register_county(maker: async_sessionmaker[AsyncSession], prefix: str, homes: int) -> County:
    """county → street → community, ``homes`` homes with a resident and a button each
    (ids under ``prefix``, so tests sharing a broker never share a device id)."""
    now = datetime.now(UTC)
    cty, st, cm = f"{prefix}-cty", f"{prefix}-st", f"{prefix}-cm"
    home_ids = [f"{prefix}-h{i}" for i in range(homes)]
    device_ids = [f"{prefix}-b{i}" for i in range(homes)]
    async with maker() as s, s.begin():
        s.add(Station(id=cty, name="县中心", tier="county", kind="county_centre", lat=32.68, lon=112.84))
        await s.flush()
        s.add(
            Station(
                id=st, name="街道", tier="street", kind="street_centre", parent_id=cty, lat=32.69, lon=112.85
            )
        )
        await s.flush()
        s.add(
            Station(
                id=cm,
                name="社区",
                tier="community",
                kind="day_care_centre",
                parent_id=st,
                lat=32.691,
                lon=112.851,
            )
        )
        await s.flush()
        s.add(Staff(id=f"{prefix}-r1", station_id=cm, name="李", role="responder", phone="1", on_duty=True))
        for h in home_ids:
            s.add(Home(id=h, station_id=cm, address="路1号", lat=32.692, lon=112.852))
        await s.flush()
        for h, dev in zip(home_ids, device_ids, strict=True):
            s.add(
                Resident(
                    id=f"{h}-r", home_id=h, name="王", sex="F", birth_date=date(1940, 1, 1), capacity_level=2
                )
            )
            s.add(Device(id=dev, home_id=h, kind="button", heartbeat_s=3600, enabled=True, created_at=now))
    return County(station=cm, homes=home_ids, devices=device_ids)


# --------------------------------------------------------------------------- a device


@dataclass
class DeviceConn:
    """One device connection: publishes events, records every ack it gets."""

    client: aiomqtt.Client
    device_id: str
    acks: list[tuple[float, dict[str, object]]] = field(default_factory=list)

    async def send(self, event_id: str, type_: str = "sos") -> float:
        body = {"id": event_id, "ts": int(time.time() * 1000), "type": type_}
        sent = time.monotonic()
        await self.client.publish(f"{ROOT}/{self.device_id}/events", json.dumps(body).encode(), qos=1)
        return sent

    async def send_until_received(self, event_id: str, type_: str = "sos", timeout_s: float = 20.0) -> float:
        """Send, and resend every second until ``received`` comes, as a device does
        (docs/protocol.md): an event sent while no gateway is subscribed is not lost."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.send(event_id, type_)
            with contextlib.suppress(pytest.fail.Exception):
                return await self.wait_ack(
                    event_id, "received", min(1.0, max(deadline - time.monotonic(), 0.05))
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.device_id}: no 'received' for {event_id} in {timeout_s} s; got {self.acks}"
                )

    async def status(self, state: str) -> None:
        await self.client.publish(
            f"{ROOT}/{self.device_id}/status", json.dumps({"state": state}).encode(), qos=1, retain=True
        )

    def states(self, event_id: str) -> list[str]:
        return [str(b.get("state")) for _, b in self.acks if b.get("event_id") == event_id]

    async def wait_ack(self, event_id: str, state: str, timeout_s: float) -> float:
        """Seconds (monotonic clock) at which the ack arrived; fails the test on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            for at, b in self.acks:
                if b.get("event_id") == event_id and b.get("state") == state:
                    return at
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.device_id}: no {state!r} ack for {event_id} in {timeout_s} s; got {self.acks}"
                )
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def device(port: int, device_id: str, *, will: bool = False) -> AsyncIterator[DeviceConn]:
    """A connected device reading its acks (anonymous broker: no credentials). With
    ``will`` it sets the protocol's will, so the broker announces it offline when lost."""
    will_msg = (
        aiomqtt.Will(
            f"{ROOT}/{device_id}/status", json.dumps({"state": "offline"}).encode(), qos=1, retain=True
        )
        if will
        else None
    )
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=device_id, clean_session=True, will=will_msg, timeout=10
    ) as c:
        await c.subscribe(f"{ROOT}/{device_id}/ack", qos=1)
        dev = DeviceConn(client=c, device_id=device_id)

        async def read() -> None:
            async for m in c.messages:
                with contextlib.suppress(ValueError):
                    body = json.loads(m.payload if isinstance(m.payload, bytes) else b"")
                    if isinstance(body, dict):
                        dev.acks.append((time.monotonic(), body))

        reader = asyncio.create_task(read())
        try:
            yield dev
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader

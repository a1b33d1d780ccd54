"""A graceful restart of a real Mosquitto (our own, on its own port) with devices
connected with their wills: the wills it publishes become at most one incident, labelled
"broker restart", and no per-home trouble call (PostgreSQL, Redis, the real gateway, an
in-process dispatcher). Issue 10 item 3: it used to open a trouble call per home.

Fewer devices than ``mass_offline.min_devices``: only the gateway's own record of the
outage can tell these wills from ten homes in trouble."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from carecall.core.clock import SystemClock
from carecall.shell.fleet_registry import provision_fleet
from config.settings import load_settings
from device_gateway.models import BrokerOutage, DeviceEvent, DeviceState
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import Call, EventIntake
from dispatcher.engine.process import Dispatcher
from dispatcher.incidents.models import IncidentDevice, MassOfflineIncident
from dispatcher.notifications.notifiers import LogNotifier
from tests.integration.conftest import running_gateway
from tests.integration.own_mosquitto import OwnMosquitto, own_mosquitto

pytestmark = pytest.mark.integration

DEVICES = 10
ONLINE = json.dumps({"state": "online"}).encode()
OFFLINE = json.dumps({"state": "offline"}).encode()


class Devices:
    """Real device connections (paho, one each) with the protocol's will, saying
    ``online`` after every connect and reconnecting by themselves."""

    def __init__(self, port: int, ids: list[str]) -> None:
        self.clients: list[paho.Client] = []
        self.connects = 0
        self._lock = threading.Lock()
        for dev in ids:
            c = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=dev, protocol=paho.MQTTv311, clean_session=True
            )
            topic = f"carecall/v1/devices/{dev}/status"
            c.will_set(topic, OFFLINE, qos=1, retain=True)
            # devices back a few seconds after the broker (their backoff), not within the
            # gateway's state flush: a will and a return inside one flush are no outage
            c.reconnect_delay_set(min_delay=4, max_delay=8)
            c.on_connect = self._on_connect(topic)
            c.connect_async("127.0.0.1", port, keepalive=30)
            c.loop_start()
            self.clients.append(c)

    def _on_connect(self, topic: str) -> Any:
        def on_connect(c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if not getattr(rc, "is_failure", False):
                c.publish(topic, ONLINE, qos=1, retain=True)
                with self._lock:
                    self.connects += 1

        return on_connect

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()  # a planned stop: no will
            c.loop_stop()


@pytest.fixture
def broker() -> Iterator[OwnMosquitto]:
    with own_mosquitto() as b:
        yield b


async def _wait(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await cond():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def _count(maker: async_sessionmaker[AsyncSession], stmt: Any) -> int:
    async with maker() as s:
        return int(await s.scalar(stmt) or 0)


async def test_graceful_broker_restart_opens_at_most_one_incident_and_no_trouble_calls(
    broker: OwnMosquitto, pg_url: str, pg_maker: async_sessionmaker[AsyncSession], redis_url: str
) -> None:
    prefix = f"mo{secrets.token_hex(2)}"
    fleet = await provision_fleet(pg_maker, DEVICES, prefix=prefix, kind="hub", heartbeat_s=3600)
    instance = f"mo-{secrets.token_hex(3)}"
    dispatcher = Dispatcher(
        settings=load_settings(database_url=pg_url, instance=instance),
        maker=pg_maker,
        bus=MemoryBus(),
        clock=SystemClock(),
        mqtt=None,
        notifier=LogNotifier(),
    )

    async def intake() -> None:
        while True:
            while await dispatcher.intake_once():
                pass
            await asyncio.sleep(0.2)

    async with running_gateway(
        ("127.0.0.1", broker.port), pg_url, pg_maker, redis_url, instance=instance
    ) as gw:
        devices = await asyncio.to_thread(Devices, broker.port, fleet.devices)
        runner = asyncio.create_task(intake())
        try:
            online = select(func.count()).select_from(DeviceState).where(DeviceState.online.is_(True))
            await _wait(lambda: _wait_n(pg_maker, online, DEVICES), 20, f"all {DEVICES} devices online")
            t_restart = time.monotonic()
            await asyncio.to_thread(broker.restart)
            offline = select(func.count()).select_from(DeviceEvent).where(DeviceEvent.type == "offline")
            back = select(func.count()).select_from(DeviceEvent).where(DeviceEvent.type == "online")
            await _wait(
                lambda: _wait_n(pg_maker, offline, DEVICES), 30, "every will stored as an offline event"
            )
            await _wait(lambda: _wait_n(pg_maker, back, DEVICES), 30, "every device back online")
            handled = (
                select(func.count())
                .select_from(DeviceEvent)
                .join(EventIntake, EventIntake.event_pk == DeviceEvent.id)
            )
            everything = select(func.count()).select_from(DeviceEvent)
            total = await _count(pg_maker, everything)
            await _wait(lambda: _wait_n(pg_maker, handled, total), 30, "every stored event handled")
            await gw.outages.settle()
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            await asyncio.to_thread(devices.close)
    async with pg_maker() as s:
        by_class = dict(
            (await s.execute(select(Call.event_class, func.count()).group_by(Call.event_class))).all()
        )
        incidents = (await s.scalars(select(MassOfflineIncident))).all()
        outages = (await s.scalars(select(BrokerOutage).where(BrokerOutage.gateway == gw.name))).all()
        calls = (await s.scalars(select(Call))).all()
        opened = (await s.scalars(select(AuditRow.detail).where(AuditRow.kind == "call_opened"))).all()
    print(
        f"\n[graceful restart] {DEVICES} devices: calls by class {by_class}, incidents "
        f"{[(i.call_id, i.cause) for i in incidents]}, outages {len(outages)}; "
        f"{time.monotonic() - t_restart:.1f} s from the restart to everything handled"
    )
    assert by_class.get("trouble", 0) == 0, "no per-home trouble call for a broker restart"
    assert len(incidents) == 1 and by_class == {"mass_offline": 1}
    assert incidents[0].cause == "broker_restart"
    assert outages and all(o.back_at is not None for o in outages)
    assert opened[0]["label"] == "broker restart" and opened[0]["outage"]["gateway"] == gw.name
    # every device came back: the incident resolved itself
    assert [(c.status, c.outcome) for c in calls] == [("resolved", "restored")]
    assert (await verify_log(pg_maker)).ok


async def _wait_n(maker: async_sessionmaker[AsyncSession], stmt: Any, n: int) -> bool:
    return await _count(maker, stmt) >= n


async def test_two_dispatcher_copies_share_a_storm_into_one_incident(
    pg_url: str, pg_maker: async_sessionmaker[AsyncSession]
) -> None:
    """Every process may run as several copies: two dispatchers taking a storm's offline
    events in small batches at once open one incident, fold nothing twice, and the last
    return resolves it once."""
    from datetime import UTC, datetime, timedelta

    from device_gateway.store import EventRow, insert_events

    n = 300
    fleet = await provision_fleet(pg_maker, n, prefix=f"mc{secrets.token_hex(2)}", kind="hub")
    t0 = datetime.now(UTC)

    def rows(kind: str, at: datetime, part: range) -> list[EventRow]:
        return [
            EventRow(
                device_id=fleet.devices[i],
                event_id=f"sup-{kind}-{i}",
                home_id=fleet.homes[i],
                type=kind,
                event_class="trouble" if kind == "offline" else "info",
                sensor=None,
                data={},
                source="supervision",
                device_ts=None,
                received_at=at + timedelta(milliseconds=i),
                clock_skew_s=None,
                clock_suspect=False,
                gateway="gw-test",
            )
            for i in part
        ]

    copies = [
        Dispatcher(
            settings=load_settings(database_url=pg_url, instance=f"mc-{k}"),
            maker=pg_maker,
            bus=MemoryBus(),
            clock=SystemClock(),
            mqtt=None,
            notifier=LogNotifier(),
        )
        for k in range(2)
    ]

    async def drain(d: Dispatcher) -> None:
        idle = 0
        while idle < 3:
            if await d.intake_once(10):
                idle = 0
            else:
                idle += 1
                await asyncio.sleep(0.1)

    for part in (range(0, 5), range(5, 150), range(150, n)):  # the first few before the rest
        async with pg_maker() as s, s.begin():
            await insert_events(s, rows("offline", t0, part))
        await asyncio.gather(*(drain(d) for d in copies))
    async with pg_maker() as s:
        open_ = (await s.scalars(select(Call).where(Call.status.not_in(("resolved", "cancelled"))))).all()
        members = await s.scalar(select(func.count()).select_from(IncidentDevice))
        errors = await s.scalar(
            select(func.count()).select_from(EventIntake).where(EventIntake.decision == "error")
        )
    assert [c.event_class for c in open_] == ["mass_offline"] and members == n and errors == 0
    async with pg_maker() as s, s.begin():
        await insert_events(s, rows("online", t0 + timedelta(seconds=20), range(n)))
    await asyncio.gather(*(drain(d) for d in copies))
    async with pg_maker() as s:
        calls = (await s.scalars(select(Call).where(Call.event_class == "mass_offline"))).all()
        restored = await s.scalar(
            select(func.count())
            .select_from(AuditRow)
            .where(AuditRow.kind == "restored", AuditRow.call_id == calls[0].id)
        )
        handled = await s.scalar(select(func.count()).select_from(EventIntake))
    assert [(c.status, c.outcome) for c in calls] == [("resolved", "restored")] and restored == 1
    assert handled == 2 * n
    assert (await verify_log(pg_maker)).ok

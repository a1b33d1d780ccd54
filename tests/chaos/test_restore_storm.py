"""Chaos: a restore storm. 2,000 devices go offline at once (their wills) and come back
online, while other devices keep pressing SOS. Nothing may be lost: every SOS is stored
once, acked ``received`` and taken into a call; the 2,000 offline events become one mass
offline incident (no trouble call per home), which resolves itself when they are back.

The production processes (``carecall gateway`` and ``carecall dispatcher``) run as
subprocesses on PostgreSQL and Redis, against a Mosquitto of the test's own (its own
port: the wills and retained states of 2,000 devices stay off the machine's shared
broker). The wills are published the way the broker publishes them (retained
``{"state":"offline"}`` on each device's status topic) through the load generator's
connection, as are the returns; the SOS go through it too, each resent until acked, as a
device does. Issue 10: after the first restore, intake used to stop for good on
PostgreSQL, and every offline event opened a trouble call.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.fleet_registry import provision_fleet
from device_gateway.models import DeviceEvent, DeviceState
from dispatcher.audit.models import AuditRow
from dispatcher.audit.service import verify_log
from dispatcher.calls.models import Call, EventIntake
from dispatcher.incidents.models import MassOfflineIncident
from simulators.loadgen import LoadGenerator
from tests.chaos.test_chaos import Cluster, running
from tests.integration.own_mosquitto import own_mosquitto

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
STORM_DEVICES = 2000  # offline and back
SOS_DEVICES = 200  # pressing SOS meanwhile
SOS_RATE = 15.0  # per second
SOS_SECONDS = 30.0
OFFLINE_FOR_S = 8.0  # the wills, then this long before the devices return
BOUND_S = 170.0  # the whole storm, from the first will to the last check


async def _count(maker: async_sessionmaker[AsyncSession], stmt: object) -> int:
    async with maker() as s:
        return int(await s.scalar(stmt) or 0)  # type: ignore[call-overload]


async def _wait_for(
    maker: async_sessionmaker[AsyncSession], stmt: object, n: int, timeout_s: float, what: str
) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if await _count(maker, stmt) >= n:
            return time.monotonic() - t0
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout_s} s waiting for {what} ({await _count(maker, stmt)} of {n})"
    )


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


async def _subscribed(log: Path, timeout_s: float = 30) -> None:
    """The gateway's main connection is up (retained states published before it
    subscribed would never reach a shared subscription)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        text = await asyncio.to_thread(_read, log)
        if '"connection": "main"' in text and "gateway.connected" in text:
            await asyncio.sleep(0.5)
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the gateway did not connect within {timeout_s} s")


async def test_restore_storm_of_2000_devices_while_sos_keep_coming(
    pg_url: str, pg_maker: async_sessionmaker[AsyncSession], redis_url: str, tmp_path: Path
) -> None:
    prefix = f"rs{secrets.token_hex(2)}"
    fleet = await provision_fleet(pg_maker, STORM_DEVICES + SOS_DEVICES, prefix=prefix, kind="hub")
    storm_devs, sos_devs = fleet.devices[:STORM_DEVICES], fleet.devices[STORM_DEVICES:]
    with own_mosquitto() as broker:
        cluster = Cluster(
            pg_url,
            redis_url,
            tmp_path,
            mqtt_port=broker.port,
            escalation_file=REPO / "config" / "escalation.yaml",
            log_level="INFO",  # the gateway says when it is subscribed
        )
        with running(cluster) as c:
            c.start("gw-a")
            c.start("d-a")
            gen = LoadGenerator(
                "127.0.0.1", broker.port, client_id=f"rs-lg-{secrets.token_hex(3)}", resend_s=1.0
            )
            await asyncio.to_thread(gen.start)
            try:
                await _subscribed(tmp_path / "gw-a.log")
                # the 2,000 are connected: each said "online" when it connected
                for d in storm_devs:
                    gen.status(d, "online")
                online = (
                    select(func.count())
                    .select_from(DeviceState)
                    .where(DeviceState.online.is_(True), DeviceState.device_id.like(f"{prefix}-%"))
                )
                await _wait_for(pg_maker, online, STORM_DEVICES, 60, "the storm's devices online")

                sent: list[tuple[str, str]] = []
                stop = threading.Event()

                def press_sos() -> None:
                    n = int(SOS_RATE * SOS_SECONDS)
                    t0 = time.monotonic()
                    for k in range(n):
                        due = t0 + k / SOS_RATE
                        while time.monotonic() < due:
                            gen.resend_due()
                            time.sleep(0.01)
                        dev = sos_devs[k % len(sos_devs)]
                        ev_id = f"{prefix}sos-{k}"
                        gen.event(dev, ev_id, "sos")
                        sent.append((dev, ev_id))
                    while not stop.is_set() and gen.pending:
                        gen.resend_due()
                        time.sleep(0.05)

                sos = threading.Thread(target=press_sos, daemon=True)
                sos.start()
                await asyncio.sleep(3.0)  # SOS flowing before the storm
                t_storm = time.monotonic()
                for d in storm_devs:  # the broker publishes every will at once
                    gen.status(d, "offline")
                await asyncio.sleep(OFFLINE_FOR_S)
                for d in storm_devs:  # and they all come back
                    gen.status(d, "online")

                offline = (
                    select(func.count())
                    .select_from(DeviceEvent)
                    .where(DeviceEvent.type == "offline", DeviceEvent.device_id.like(f"{prefix}-%"))
                )
                back = (
                    select(func.count())
                    .select_from(DeviceEvent)
                    .where(DeviceEvent.type == "online", DeviceEvent.device_id.like(f"{prefix}-%"))
                )
                await _wait_for(pg_maker, offline, STORM_DEVICES, 60, "every will stored as an offline event")
                await _wait_for(pg_maker, back, STORM_DEVICES, 60, "every return stored as an online event")
                await asyncio.to_thread(sos.join, SOS_SECONDS + 60)
                stop.set()
                assert not gen.pending, f"{gen.pending} SOS never acked 'received'"
                everything = select(func.count()).select_from(DeviceEvent)
                total = await _count(pg_maker, everything)
                handled = (
                    select(func.count())
                    .select_from(DeviceEvent)
                    .join(EventIntake, EventIntake.event_pk == DeviceEvent.id)
                )
                left = BOUND_S - (time.monotonic() - t_storm)
                await _wait_for(
                    pg_maker, handled, total, max(left, 5), "every stored event taken in by the dispatcher"
                )
                took = time.monotonic() - t_storm
            finally:
                await asyncio.to_thread(gen.close)

    async with pg_maker() as s:
        rows = (
            await s.execute(
                select(DeviceEvent.device_id, DeviceEvent.event_id, EventIntake.call_id, EventIntake.decision)
                .outerjoin(EventIntake, EventIntake.event_pk == DeviceEvent.id)
                .where(DeviceEvent.type == "sos")
            )
        ).all()
        by_class = dict(
            (await s.execute(select(Call.event_class, func.count()).group_by(Call.event_class))).all()
        )
        open_trouble = await s.scalar(
            select(func.count())
            .select_from(Call)
            .where(Call.event_class == "trouble", Call.status.not_in(("resolved", "cancelled")))
        )
        incidents = (
            await s.execute(
                select(
                    MassOfflineIncident.call_id, MassOfflineIncident.cause, Call.status, Call.outcome
                ).join(Call, Call.id == MassOfflineIncident.call_id)
            )
        ).all()
        errors = await s.scalar(
            select(func.count()).select_from(EventIntake).where(EventIntake.decision == "error")
        )
        # how long an SOS waited for its call while the storm went through the intake
        waits = [
            (opened - received).total_seconds()
            for received, opened in (
                await s.execute(
                    select(DeviceEvent.received_at, func.min(AuditRow.at))
                    .join(EventIntake, EventIntake.event_pk == DeviceEvent.id)
                    .join(AuditRow, AuditRow.call_id == EventIntake.call_id)
                    .where(
                        DeviceEvent.type == "sos",
                        EventIntake.decision == "opened",
                        AuditRow.kind == "call_opened",
                    )
                    .group_by(DeviceEvent.id, DeviceEvent.received_at)
                )
            ).all()
        ]
    stored = {(r.device_id, r.event_id) for r in rows}
    lost = set(sent) - stored
    callless = [r for r in rows if r.call_id is None or r.decision not in ("opened", "joined")]
    unacked = [k for k in sent if gen.events[k].acked is None]
    waits.sort()
    verdict = await verify_log(pg_maker)
    print(
        f"\n[restore storm] {STORM_DEVICES} devices offline and back, {len(sent)} SOS meanwhile: "
        f"lost {len(lost)}, without a call {len(callless)}, unacked {len(unacked)}, resends "
        f"{gen.stats.resends}; calls by class {by_class}; incidents {[tuple(i) for i in incidents]}; "
        f"open trouble calls {open_trouble}; intake errors {errors}; SOS → call p50 "
        f"{waits[len(waits) // 2]:.2f} s, max {waits[-1]:.2f} s; all taken in {took:.1f} s after the first will; "
        f"audit {'ok' if verdict.ok else verdict.problem}"
    )
    assert len(sent) == int(SOS_RATE * SOS_SECONDS)
    assert not lost and not callless and not unacked
    assert errors == 0 and verdict.ok
    assert open_trouble == 0, "no per-home trouble call left open by the storm"
    assert len(incidents) == 1 and incidents[0].cause == "mass_offline"
    assert (incidents[0].status, incidents[0].outcome) == ("resolved", "restored")
    assert took < BOUND_S

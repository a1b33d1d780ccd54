"""County and city scale: a registry of many homes, and a fleet run that chooses its mode.

Up to 100,000 simulated devices. Each per-device connection costs a file descriptor in
this process and one in the broker, so ``run_fleet`` first raises RLIMIT_NOFILE as far as
the hard limit permits, then gives that many devices (minus a reserve for the database,
logs and the broker's own needs) a real connection of their own (``SimulatedDevice``:
per-device ACLs, wills, reconnects); the rest of the county speaks through one privileged
load-generator identity (``simulators.loadgen``). The report says which mode ran and how
many descriptors the process holds, so a figure is never quoted without its conditions.

``provision_fleet`` bulk-inserts the registry such a run needs (one county → street →
community chain with staff on duty, homes, residents, devices, and the privileged
load-generator device) in a few statements, so a 100,000-device registry takes seconds.
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.credentials import hash_secret
from dispatcher.clock import Clock
from dispatcher.models import Device, Home, Resident, Staff, Station
from simulators.device import DeviceSpec
from simulators.loadgen import LoadGenerator, latency_summary
from simulators.runner import SimReport, check_host, run_simulation
from simulators.scenario import Scenario

MAX_DEVICES = 100_000
# Descriptors kept back for the database pool, log files, the loop's self-pipe and the
# load generator's own sockets: running out mid-run would look like a broker failure.
FD_RESERVE = 256
LOADGEN_ID = "carecall-loadgen"
_CHUNK = 5_000


@dataclass(frozen=True)
class Fleet:
    """What ``provision_fleet`` registered; secrets are only returned, never stored."""

    prefix: str
    homes: list[str]
    devices: list[str]  # one per home, in home order
    loadgen_id: str
    loadgen_secret: str
    device_secrets: dict[str, str]  # empty unless with_secrets


async def provision_fleet(
    maker: async_sessionmaker[AsyncSession],
    homes: int,
    *,
    prefix: str = "fl",
    kind: str = "button",
    heartbeat_s: int = 3600,
    with_secrets: bool = False,
    now: datetime | None = None,
) -> Fleet:
    """Register ``homes`` homes with one resident and one device each, plus the load
    generator. ``with_secrets`` issues per-device secrets (needed for real connections to
    a broker that checks them, such as the embedded one); hashing costs ~1 ms a device.

    The heartbeat defaults to an hour so a bench that publishes telemetry for only some
    devices does not see the rest flagged offline midway and measure supervision instead.
    """
    if not 1 <= homes <= MAX_DEVICES:
        raise ValueError(f"homes must be between 1 and {MAX_DEVICES}")
    now = now or datetime.now(UTC)
    county, street, community = f"{prefix}-county", f"{prefix}-street", f"{prefix}-cm"
    home_ids = [f"{prefix}-h{i:06d}" for i in range(homes)]
    device_ids = [f"{prefix}-d{i:06d}" for i in range(homes)]
    loadgen_secret = secrets.token_urlsafe(24)
    device_secrets = {d: secrets.token_urlsafe(16) for d in device_ids} if with_secrets else {}
    async with maker() as s, s.begin():
        exists = await s.scalar(select(Station.id).where(Station.id == county))
        if exists is not None:
            raise ValueError(f"a fleet with prefix {prefix!r} is already registered")
        for sid, name, tier, kind_, parent in (
            (county, "县中心", "county", "county_centre", None),
            (street, "街道中心", "street", "street_centre", county),
            (community, "社区站", "community", "day_care_centre", street),
        ):
            await s.execute(
                insert(Station).values(
                    id=sid, name=name, tier=tier, kind=kind_, parent_id=parent, lat=32.69, lon=112.84
                )
            )
        await s.execute(
            insert(Staff),
            [
                {"id": f"{sid}-op", "station_id": sid, "name": "值班员", "role": role, "on_duty": True}
                for sid in (county, street, community)
                for role in ("operator",)
            ]
            + [
                {
                    "id": f"{community}-r{i}",
                    "station_id": community,
                    "name": "护理员",
                    "role": "responder",
                    "on_duty": True,
                }
                for i in range(3)
            ],
        )
        for start in range(0, homes, _CHUNK):
            chunk = range(start, min(start + _CHUNK, homes))
            await s.execute(
                insert(Home),
                [
                    {
                        "id": home_ids[i],
                        "station_id": community,
                        "address": f"模拟路{i}号",
                        "lat": 32.69 + (i % 100) * 1e-4,
                        "lon": 112.84 + (i // 100 % 100) * 1e-4,
                        "area": "urban",
                        "notes": "",
                    }
                    for i in chunk
                ],
            )
            await s.execute(
                insert(Resident),
                [
                    {
                        "id": f"{prefix}-r{i:06d}",
                        "home_id": home_ids[i],
                        "name": "模拟老人",
                        "sex": "F" if i % 2 else "M",
                        "birth_date": date(1940, 1, 1),
                        "capacity_level": i % 5,
                        "living_alone": i % 3 == 0,
                        "conditions": [],
                        "notes": "",
                    }
                    for i in chunk
                ],
            )
            await s.execute(
                insert(Device),
                [
                    {
                        "id": device_ids[i],
                        "home_id": home_ids[i],
                        "kind": kind,
                        "model": "sim",
                        "heartbeat_s": heartbeat_s,
                        "enabled": True,
                        "secret_hash": hash_secret(device_secrets[device_ids[i]])
                        if with_secrets
                        else None,
                        "privileged": False,
                        "created_at": now,
                    }
                    for i in chunk
                ],
            )
        await s.execute(
            insert(Device).values(
                id=f"{prefix}-{LOADGEN_ID}",
                home_id=home_ids[0],
                kind="hub",
                model="loadgen",
                heartbeat_s=86_400,
                enabled=True,
                secret_hash=hash_secret(loadgen_secret),
                privileged=True,
                created_at=now,
            )
        )
    return Fleet(prefix, home_ids, device_ids, f"{prefix}-{LOADGEN_ID}", loadgen_secret, device_secrets)


# --------------------------------------------------------------------------- fd limit


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit, which
    only root may raise, and we do not try). Returns (soft, hard) as now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def plan_modes(devices: int, fd_soft: int, *, max_connections: int | None = None) -> tuple[int, int]:
    """How many devices get their own connection and how many go through the load
    generator, given the descriptors this process may hold."""
    room = max(0, fd_soft - FD_RESERVE)
    if max_connections is not None:
        room = min(room, max_connections)
    real = min(devices, room)
    return real, devices - real


# --------------------------------------------------------------------------- fleet run


class FleetReport(BaseModel):
    """A fleet run: which mode ran for how many devices, and what each part saw."""

    model_config = ConfigDict(frozen=True)

    mode: str  # "connections", "load", or "mixed"
    devices: int
    connected_devices: int
    load_mode_devices: int
    fd_soft_limit: int
    fd_hard_limit: int
    connections: SimReport | None
    load: dict[str, Any] | None


def _load_part(
    host: str,
    port: int,
    device_ids: Sequence[str],
    *,
    username: str | None,
    password: str | None,
    telemetry_per_s: float,
    events_per_s: float,
    duration_s: float,
    allow_remote: bool,
    resend_s: float,
    drain_s: float,
) -> dict[str, Any]:
    """The load-mode share of the fleet: paced telemetry and events over one identity."""
    gen = LoadGenerator(
        host,
        port,
        username=username,
        password=password,
        client_id=f"loadgen-{secrets.token_hex(3)}",
        allow_remote=allow_remote,
        resend_s=resend_s,
    )
    gen.start()
    try:
        t0 = time.monotonic()
        keys = gen.run_paced(
            telemetry_per_s=telemetry_per_s,
            events_per_s=events_per_s,
            duration_s=duration_s,
            devices=device_ids,
            event_prefix=f"fl{secrets.token_hex(3)}",
        )
        gen.wait_acked(drain_s)
        real_s = time.monotonic() - t0
    finally:
        gen.close()
    acked = sum(1 for k in keys if gen.events[k].acked is not None)
    return {
        "identity": username,
        "devices": len(device_ids),
        "real_s": round(real_s, 2),
        "telemetry_sent": gen.stats.telemetry_sent,
        "events_sent": len(keys),
        "events_acked": acked,
        "events_pending": len(keys) - acked,
        "resends": gen.stats.resends,
        "ack_latency_ms": latency_summary(gen.ack_latencies_ms(keys)),
    }


async def run_fleet(
    *,
    host: str,
    port: int,
    specs: Sequence[DeviceSpec],
    scenario: Scenario,
    clock: Clock,
    duration_s: float,
    loadgen_username: str | None = None,
    loadgen_password: str | None = None,
    load_telemetry_per_s: float = 0.0,
    load_events_per_s: float = 0.0,
    max_connections: int | None = None,
    allow_remote: bool = False,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> FleetReport:
    """Run up to 100,000 devices for ``duration_s``: as many with their own connection as
    the descriptor limit allows, the rest through the load generator at the given rates
    (the county's message rate, not a per-device schedule). Stops by itself."""
    check_host(host, allow_remote=allow_remote)
    if len(specs) > MAX_DEVICES:
        raise ValueError(f"at most {MAX_DEVICES} devices")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    soft, hard = raise_fd_limit(len(specs) + FD_RESERVE)
    real_n, load_n = plan_modes(len(specs), soft, max_connections=max_connections)
    if load_n and loadgen_username is None:
        raise ValueError(
            f"{load_n} devices do not fit in {soft} descriptors: load mode needs the privileged "
            "load-generator identity (provision_fleet registers one)"
        )
    say = on_progress or (lambda _m: None)
    say(
        f"fleet: {len(specs)} devices; open-files limit {soft} (hard {hard}); "
        f"{real_n} with their own connection, {load_n} in load mode"
    )
    load_result: dict[str, Any] | None = None
    load_thread: threading.Thread | None = None
    if load_n:
        ids = [s.device_id for s in specs[real_n:]]

        def go() -> None:
            nonlocal load_result
            load_result = _load_part(
                host,
                port,
                ids,
                username=loadgen_username,
                password=loadgen_password,
                telemetry_per_s=load_telemetry_per_s,
                events_per_s=load_events_per_s,
                duration_s=duration_s / max(clock.speed, 1e-9),
                allow_remote=allow_remote,
                resend_s=scenario.resend.initial_s,
                drain_s=10.0,
            )

        load_thread = threading.Thread(target=go, name="fleet-loadgen", daemon=True)
        load_thread.start()
    conn_report: SimReport | None = None
    if real_n:
        conn_report = await run_simulation(
            host=host,
            port=port,
            devices=specs[:real_n],
            scenario=scenario,
            clock=clock,
            duration_s=duration_s,
            stop=stop,
            allow_remote=allow_remote,
            on_progress=lambda st: say(
                f"connections: {st.online}/{st.devices} online, events {st.events_received}/"
                f"{st.events_raised} acked, {st.telemetry_sent} telemetry"
            ),
        )
    if load_thread is not None:
        await asyncio.to_thread(load_thread.join)
    mode = "mixed" if real_n and load_n else ("connections" if real_n else "load")
    return FleetReport(
        mode=mode,
        devices=len(specs),
        connected_devices=real_n,
        load_mode_devices=load_n,
        fd_soft_limit=soft,
        fd_hard_limit=hard,
        connections=conn_report,
        load=load_result,
    )

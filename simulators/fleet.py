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
import itertools
import json
import logging
import os
import random
import resource
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.credentials import hash_secret, verify_secret
from dispatcher.clock import Clock
from dispatcher.models import DEFAULT_HEARTBEAT_S, Device, DeviceKind, Home, Resident, Staff, Station
from simulators.device import DeviceSpec
from simulators.loadgen import LoadGenerator, SentEvent, latency_summary
from simulators.runner import LatencySummary, SimReport, SimStats, check_host, percentile, run_simulation
from simulators.scenario import EMITTERS, Scenario

log = logging.getLogger(__name__)

MAX_DEVICES = 100_000
# Descriptors kept back for the database pool, log files, the loop's self-pipe and the
# load generator's own sockets: running out mid-run would look like a broker failure.
FD_RESERVE = 256
LOADGEN_ID = "carecall-loadgen"
_CHUNK = 5_000
# Every run is bounded by a count as well as by time: publishes by the simulator, all kinds.
DEFAULT_MAX_MESSAGES = 5_000_000


@dataclass(frozen=True)
class Fleet:
    """What ``provision_fleet`` registered; secrets are only returned, never stored."""

    prefix: str
    homes: list[str]
    devices: list[str]  # one per home, in home order
    loadgen_id: str
    loadgen_secret: str
    device_secrets: dict[str, str]  # empty unless with_secrets


def home_id(prefix: str, i: int) -> str:
    return f"{prefix}-h{i:06d}"


def device_id(prefix: str, i: int) -> str:
    return f"{prefix}-d{i:06d}"


# What a county's homes carry, cycled by home index: a hub, a one-key button and a smart
# mattress in most homes, radars, watches and hazard sensors in some. With the registry's
# default heartbeats this gives ~0.87 telemetry messages a second per 100 devices, so
# 100,000 devices send ~870 msg/s at ×1, as the county would.
COUNTY_MIX: tuple[DeviceKind, ...] = (
    DeviceKind.hub,
    DeviceKind.button,
    DeviceKind.mattress,
    DeviceKind.hub,
    DeviceKind.button,
    DeviceKind.radar,
    DeviceKind.watch,
    DeviceKind.mattress,
    DeviceKind.smoke,
    DeviceKind.door,
)


async def _insert_chain(s: AsyncSession, prefix: str) -> str:
    """The county → street → community chain with staff on duty; returns the community."""
    county, street, community = f"{prefix}-county", f"{prefix}-street", f"{prefix}-cm"
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
            {"id": f"{sid}-op", "station_id": sid, "name": "值班员", "role": "operator", "on_duty": True}
            for sid in (county, street, community)
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
    return community


async def _insert_homes(
    s: AsyncSession,
    prefix: str,
    community: str,
    indices: Sequence[int],
    *,
    kind_of: Callable[[int], str],
    heartbeat_of: Callable[[int], int],
    hash_of: Callable[[int], str | None],
    now: datetime,
    with_homes: bool = True,
) -> None:
    """Homes (with one resident) and their devices, ``_CHUNK`` rows per statement."""
    for start in range(0, len(indices), _CHUNK):
        chunk = indices[start : start + _CHUNK]
        if with_homes:
            await s.execute(
                insert(Home),
                [
                    {
                        "id": home_id(prefix, i),
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
                        "home_id": home_id(prefix, i),
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
                    "id": device_id(prefix, i),
                    "home_id": home_id(prefix, i),
                    "kind": kind_of(i),
                    "model": "sim",
                    "heartbeat_s": heartbeat_of(i),
                    "enabled": True,
                    "secret_hash": hash_of(i),
                    "privileged": False,
                    "created_at": now,
                }
                for i in chunk
            ],
        )


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
    Refuses a prefix already registered (``ensure_fleet`` reuses one instead).
    """
    if not 1 <= homes <= MAX_DEVICES:
        raise ValueError(f"homes must be between 1 and {MAX_DEVICES}")
    now = now or datetime.now(UTC)
    home_ids = [home_id(prefix, i) for i in range(homes)]
    device_ids = [device_id(prefix, i) for i in range(homes)]
    loadgen_secret = secrets.token_urlsafe(24)
    device_secrets = {d: secrets.token_urlsafe(16) for d in device_ids} if with_secrets else {}
    async with maker() as s, s.begin():
        exists = await s.scalar(select(Station.id).where(Station.id == f"{prefix}-county"))
        if exists is not None:
            raise ValueError(f"a fleet with prefix {prefix!r} is already registered")
        community = await _insert_chain(s, prefix)
        await _insert_homes(
            s,
            prefix,
            community,
            range(homes),
            kind_of=lambda _i: kind,
            heartbeat_of=lambda _i: heartbeat_s,
            hash_of=lambda i: hash_secret(device_secrets[device_ids[i]]) if with_secrets else None,
            now=now,
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


# --------------------------------------------------------------------------- reusable fleet


class FleetSetup(BaseModel):
    """What ``ensure_fleet`` found and did; the run report carries it."""

    model_config = ConfigDict(frozen=True)

    prefix: str
    devices: int
    created: int  # devices registered by this call
    reused: int  # devices already registered under the prefix
    keyed: int  # devices given a new secret for a connection of their own
    loadgen_id: str
    loadgen_rekeyed: bool
    secrets_file: str | None
    seconds: float


@dataclass(frozen=True)
class PreparedFleet:
    setup: FleetSetup
    specs: list[DeviceSpec]  # in device order; the first ``keyed`` ones carry secrets
    loadgen_id: str
    loadgen_secret: str


def _read_secrets(path: Path | None, prefix: str) -> dict[str, str]:
    """``{device id: secret}`` kept by an earlier run; empty when absent or unreadable."""
    if path is None or not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("fleet secrets file %s unreadable: issuing new secrets", path)
        return {}
    if not isinstance(raw, dict) or raw.get("prefix") != prefix or not isinstance(raw.get("secrets"), dict):
        return {}
    return {str(k): str(v) for k, v in raw["secrets"].items() if isinstance(v, str)}


def _write_secrets(path: Path, prefix: str, kept: dict[str, str]) -> None:
    """Atomically, mode 0600: these are live credentials of registered devices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"prefix": prefix, "secrets": kept}, fh, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def ensure_fleet(
    maker: async_sessionmaker[AsyncSession],
    devices: int,
    *,
    prefix: str = "sim",
    connected: int = 0,
    secrets_path: Path | None = None,
    mix: Sequence[str] = COUNTY_MIX,
    now: datetime | None = None,
) -> PreparedFleet:
    """Make sure ``devices`` simulated homes exist under ``prefix``, reusing what an earlier
    run registered (a second run with the same prefix inserts nothing), and that the load
    generator and the first ``connected`` devices have secrets this process knows.

    Secrets are kept in ``secrets_path`` (mode 0600, like the demo's secrets file) so a
    rerun does not rekey devices; a Mosquitto with a password file only needs
    ``carecall broker-config`` and a SIGHUP after a run that issued new ones.
    """
    if not 1 <= devices <= MAX_DEVICES:
        raise ValueError(f"devices must be between 1 and {MAX_DEVICES}")
    if not 0 <= connected <= devices:
        raise ValueError("connected must be between 0 and devices")
    if not mix:
        raise ValueError("the kind mix is empty")
    t0 = time.monotonic()
    now = now or datetime.now(UTC)
    kept = await asyncio.to_thread(_read_secrets, secrets_path, prefix)
    loadgen_id = f"{prefix}-{LOADGEN_ID}"
    wanted = [device_id(prefix, i) for i in range(devices)]
    async with maker() as s, s.begin():
        community = f"{prefix}-cm"
        if await s.scalar(select(Station.id).where(Station.id == f"{prefix}-county")) is None:
            await _insert_chain(s, prefix)
        have_homes = set(await s.scalars(select(Home.id).where(Home.station_id == community)))
        rows = (
            await s.execute(
                select(Device.id, Device.secret_hash).where(
                    Device.id.startswith(f"{prefix}-d", autoescape=True)
                )
            )
        ).all()
        have = {r.id: r for r in rows}
        missing = [i for i, d in enumerate(wanted) if d not in have]
        missing_homes = [i for i in missing if home_id(prefix, i) not in have_homes]
        if missing:
            await _insert_homes(
                s,
                prefix,
                community,
                missing_homes,
                kind_of=lambda i: mix[i % len(mix)],
                heartbeat_of=lambda i: DEFAULT_HEARTBEAT_S[DeviceKind(mix[i % len(mix)])],
                hash_of=lambda _i: None,
                now=now,
            )
            orphans = [i for i in missing if home_id(prefix, i) in have_homes]
            if orphans:
                await _insert_homes(
                    s,
                    prefix,
                    community,
                    orphans,
                    kind_of=lambda i: mix[i % len(mix)],
                    heartbeat_of=lambda i: DEFAULT_HEARTBEAT_S[DeviceKind(mix[i % len(mix)])],
                    hash_of=lambda _i: None,
                    now=now,
                    with_homes=False,
                )
        # The first ``connected`` devices need a secret we know; rekey those we do not.
        need = [
            d for d in wanted[:connected] if d not in kept or d not in have or have[d].secret_hash is None
        ]
        fresh = {d: secrets.token_urlsafe(16) for d in need}
        hashes = await asyncio.to_thread(lambda: {d: hash_secret(v) for d, v in fresh.items()})
        for start in range(0, len(need), _CHUNK):
            await s.execute(
                update(Device),
                [{"id": d, "secret_hash": hashes[d]} for d in need[start : start + _CHUNK]],
            )
        kept.update(fresh)
        lg_hash = await s.scalar(select(Device.secret_hash).where(Device.id == loadgen_id))
        lg_secret = kept.get(loadgen_id)
        rekey_lg = lg_secret is None or not await asyncio.to_thread(verify_secret, lg_secret, lg_hash)
        if rekey_lg:
            lg_secret = secrets.token_urlsafe(24)
            kept[loadgen_id] = lg_secret
            lg_new_hash = hash_secret(lg_secret)
            if lg_hash is None and not await s.scalar(select(Device.id).where(Device.id == loadgen_id)):
                await s.execute(
                    insert(Device).values(
                        id=loadgen_id,
                        home_id=home_id(prefix, 0),
                        kind="hub",
                        model="loadgen",
                        heartbeat_s=86_400,
                        enabled=True,
                        secret_hash=lg_new_hash,
                        privileged=True,
                        created_at=now,
                    )
                )
            else:
                await s.execute(
                    update(Device)
                    .where(Device.id == loadgen_id)
                    .values(secret_hash=lg_new_hash, privileged=True, enabled=True)
                )
        spec_rows = (
            await s.execute(
                select(Device.id, Device.kind, Device.home_id, Device.heartbeat_s).where(
                    Device.id.startswith(f"{prefix}-d", autoescape=True)
                )
            )
        ).all()
    by_id = {r.id: r for r in spec_rows}
    specs = [
        DeviceSpec(
            device_id=d,
            kind=str(by_id[d].kind),
            home_id=str(by_id[d].home_id),
            secret=kept.get(d, "") if i < connected else "",
            heartbeat_s=int(by_id[d].heartbeat_s),
        )
        for i, d in enumerate(wanted)
    ]
    if secrets_path is not None and (fresh or rekey_lg):
        await asyncio.to_thread(_write_secrets, secrets_path, prefix, kept)
    assert lg_secret is not None
    setup = FleetSetup(
        prefix=prefix,
        devices=devices,
        created=len(missing),
        reused=devices - len(missing),
        keyed=len(fresh),
        loadgen_id=loadgen_id,
        loadgen_rekeyed=rekey_lg,
        secrets_file=str(secrets_path) if secrets_path is not None else None,
        seconds=round(time.monotonic() - t0, 2),
    )
    return PreparedFleet(setup, specs, loadgen_id, lg_secret)


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


def fd_soft_after_raise(wanted: int) -> int:
    """The soft limit ``raise_fd_limit(wanted)`` would reach, without raising it yet."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    return max(soft, target)


def plan_modes(devices: int, fd_soft: int, *, max_connections: int | None = None) -> tuple[int, int]:
    """How many devices get their own connection and how many go through the load
    generator, given the descriptors this process may hold."""
    room = max(0, fd_soft - FD_RESERVE)
    if max_connections is not None:
        room = min(room, max_connections)
    real = min(devices, room)
    return real, devices - real


def split_scenario(scenario: Scenario, connected: int, load: int) -> tuple[Scenario, Scenario]:
    """The parts of one county-wide scenario played by the per-device connections and by
    the load generator, so a mixed run does the scenario once, not once per mode.

    Counted stories (a burst's events, a power cut's devices) are shared in proportion to
    the devices in each part; one-device stories (scripted events, a flapping device, a
    device that resends forever) go to a real connection when there is one, since that
    is where they exercise wills and reconnects."""
    total = connected + load
    if total <= 0:
        raise ValueError("no devices")

    def share(n: int, *, of_devices: bool) -> tuple[int, int]:
        """Split ``n`` in proportion; a count of devices cannot exceed a part's devices."""
        mine = round(n * connected / total)
        if not of_devices:
            return mine, n - mine
        mine = min(connected, mine)
        return mine, min(load, n - mine)

    conn: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    if scenario.burst is not None:
        a, b = share(scenario.burst.total, of_devices=False)
        conn["burst"] = scenario.burst.model_copy(update={"total": a})
        rest["burst"] = scenario.burst.model_copy(update={"total": b})
    if scenario.power_cut is not None:
        a, b = share(scenario.power_cut.devices, of_devices=True)
        conn["power_cut"] = scenario.power_cut.model_copy(update={"devices": a}) if a else None
        rest["power_cut"] = scenario.power_cut.model_copy(update={"devices": b}) if b else None
    singles: dict[str, Any] = {"scripted": [], "flapping": [], "resend_forever": []}
    if connected:
        rest.update(singles)
    else:
        conn.update(singles)
    return scenario.model_copy(update=conn), scenario.model_copy(update=rest)


# --------------------------------------------------------------------------- load mode


@dataclass(frozen=True, order=True)
class _Act:
    """One thing the load generator does at a simulated moment on behalf of a device."""

    at_s: float
    seq: int
    what: str  # "event", "drop", "back", "forever"
    device: int  # index into the load part's devices
    type: str = ""
    interval_s: float = 0.0
    max_sends: int = 0


def _event_data(event_type: str, rng: random.Random, *, night: bool, not_returned: float) -> dict[str, Any]:
    """Type-specific fields, shaped like the per-device simulator's."""
    if event_type == "vital_alert":
        high = rng.random() < 0.7
        return {
            "hr": rng.randint(125, 150) if high else rng.randint(35, 45),
            "rr": rng.randint(24, 32) if high else rng.randint(5, 8),
        }
    if event_type == "inactivity":
        return {"minutes": rng.randint(120, 480)}
    if event_type == "bed_exit":
        return {"returned": not (night and rng.random() < not_returned)}
    if event_type == "low_battery":
        return {"battery_pct": rng.randint(8, 15)}
    return {}


def plan_load(
    scenario: Scenario,
    specs: Sequence[DeviceSpec],
    duration_s: float,
    *,
    seed: int = 1,
    start: datetime | None = None,
    max_actions: int = 2_000_000,
) -> list[_Act]:
    """Everything the scenario makes the load part's devices do besides heartbeats, fixed up
    front (reproducible per seed): Poisson events per kind with the day/night rhythm,
    random drops, the burst, the power cut, scripted events, flapping and resending
    devices. Bounded by ``max_actions``."""
    rng = random.Random(f"{seed}:load-plan")
    start = start or datetime.now(UTC)
    tz = ZoneInfo(scenario.timezone)
    acts: list[_Act] = []
    seq = itertools.count()
    by_kind: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_kind.setdefault(spec.kind, []).append(i)

    def add(at_s: float, what: str, device: int, **kw: Any) -> None:
        if at_s < duration_s and len(acts) < max_actions:
            acts.append(_Act(at_s, next(seq), what, device, **kw))

    def night_at(at_s: float) -> bool:
        moment = start + timedelta(seconds=at_s)
        return scenario.day_night_rhythm and scenario.night.contains(moment.astimezone(tz).hour)

    for kind, members in sorted(by_kind.items()):
        peak = scenario.peak_rate_per_s(kind) * len(members)
        types = sorted(scenario.rates.get(kind, {}))
        at_s = 0.0
        while peak > 0 and len(acts) < max_actions:
            at_s += rng.expovariate(peak)
            if at_s >= duration_s:
                break
            night = night_at(at_s)
            draw = rng.random() * peak
            for event_type in types:
                draw -= scenario.rate_per_s(kind, event_type, night=night) * len(members)
                if draw < 0:
                    add(at_s, "event", rng.choice(members), type=event_type)
                    break
    if scenario.offline.rate_per_s > 0 and specs:
        rate = scenario.offline.rate_per_s * len(specs)
        at_s = 0.0
        while len(acts) < max_actions:
            at_s += rng.expovariate(rate)
            if at_s >= duration_s:
                break
            victim = rng.randrange(len(specs))
            add(at_s, "drop", victim)
            add(at_s + rng.uniform(scenario.offline.min_s, scenario.offline.max_s), "back", victim)
    burst = scenario.burst
    if burst is not None and burst.total and specs:
        types = sorted(burst.types)
        weights = [burst.types[t] for t in types]
        senders = {t: [i for k in EMITTERS.get(t, ()) for i in by_kind.get(k.value, [])] for t in types}
        for _ in range(burst.total):
            event_type = rng.choices(types, weights)[0]
            pool = senders[event_type]
            device = rng.choice(pool) if pool else rng.randrange(len(specs))
            add(burst.start_s + rng.random() * burst.duration_s, "event", device, type=event_type)
    cut = scenario.power_cut
    if cut is not None and specs:
        kinds = set(cut.kinds) if cut.kinds is not None else None
        pool = [i for i, sp in enumerate(specs) if kinds is None or sp.kind in kinds]
        victims = pool if len(pool) <= cut.devices else rng.sample(pool, cut.devices)
        for v in victims:
            add(cut.at_s, "drop", v)
        for v in victims:
            add(cut.at_s + cut.duration_s, "back", v)

    def pick(kind: str | None, index: int) -> int | None:
        found = sorted(
            (i for i, sp in enumerate(specs) if kind is None or sp.kind == kind),
            key=lambda i: specs[i].device_id,
        )
        return found[index % len(found)] if found else None

    for scripted in scenario.scripted:
        kinds_ = [scripted.kind] if scripted.kind else [k.value for k in EMITTERS.get(scripted.type, ())]
        candidates = sorted((i for k in kinds_ for i in by_kind.get(k, [])), key=lambda i: specs[i].device_id)
        if candidates:
            add(
                scripted.at_s,
                "event",
                candidates[scripted.device_index % len(candidates)],
                type=scripted.type,
            )
    for flap in scenario.flapping:
        flapper = pick(flap.kind, flap.device_index)
        if flapper is not None:
            for n in range(flap.max_drops):
                at_s = flap.start_s + n * flap.period_s
                if at_s >= duration_s:
                    break
                add(at_s, "drop", flapper)
                add(at_s + flap.down_s, "back", flapper)
    for item in scenario.resend_forever:
        resender = pick(item.kind, item.device_index)
        if resender is not None:
            add(
                item.at_s,
                "forever",
                resender,
                type=item.type,
                interval_s=item.interval_s or scenario.resend.initial_s,
                max_sends=item.max_sends,
            )
    acts.sort()
    return acts


class LoadReport(BaseModel):
    """The load-mode part of a run: one privileged identity speaking for many devices."""

    model_config = ConfigDict(frozen=True)

    identity: str | None
    devices: int
    real_s: float
    telemetry_sent: int
    events_sent: int
    events_acked: int
    events_rejected: int
    events_pending: int
    resends: int
    status_sent: int
    status_cleared: int  # retained statuses deleted at the end (empty retained message)
    acks_seen: int
    acks_observed: bool | None  # False: the broker refused the ack subscription
    ack_latency: LatencySummary
    offline_max: int  # devices offline at once, at most (power cut, drops, flapping)
    publish_errors: int
    stopped_by: str


class LoadRun:
    """Plays a scenario's share for many devices over one ``LoadGenerator``, in a thread.

    Heartbeats go round-robin per heartbeat interval, so every device is heard once per
    interval as the registry expects; the planned actions (``plan_load``) run at their
    simulated moments. An offline device sends nothing; events it raises meanwhile are
    held and sent when it is back, like a device's."""

    def __init__(
        self,
        gen: LoadGenerator,
        specs: Sequence[DeviceSpec],
        scenario: Scenario,
        *,
        speed: float,
        duration_s: float,
        max_messages: int,
        seed: int = 1,
        drain_s: float = 10.0,
        run_id: str | None = None,
    ) -> None:
        self.gen = gen
        self.specs = list(specs)
        self.scenario = scenario
        self.speed = speed
        self.duration_s = duration_s
        self.max_messages = max_messages
        self.drain_s = drain_s
        self.run_id = run_id or secrets.token_hex(4)
        self.start = datetime.now(UTC)
        self._rng = random.Random(f"{seed}:load-data")
        self.plan = plan_load(
            scenario, self.specs, duration_s, seed=seed, start=self.start, max_actions=max_messages
        )
        self.offline: set[str] = set()
        self.offline_max = 0
        self.status_touched: set[str] = set()  # retained status published: cleared at the end
        self.stop = threading.Event()
        self.stopped_by = "not started"
        self.status_cleared = 0
        self.real_s = 0.0
        self._n = 0
        groups: dict[float, list[str]] = {}
        for sp in self.specs:
            groups.setdefault(scenario.heartbeat_for(sp.kind, sp.heartbeat_s), []).append(sp.device_id)
        self._groups = sorted(groups.items())
        self._forever: list[tuple[SentEvent, float, int]] = []  # event, interval, max copies

    @property
    def messages(self) -> int:
        st = self.gen.stats
        return st.telemetry_sent + st.events_sent + st.resends + st.status_sent

    def _event(self, device: str, event_type: str, at_s: float) -> SentEvent:
        self._n += 1
        moment = (self.start + timedelta(seconds=at_s)).astimezone(ZoneInfo(self.scenario.timezone))
        night = self.scenario.day_night_rhythm and self.scenario.night.contains(moment.hour)
        data = _event_data(
            event_type, self._rng, night=night, not_returned=self.scenario.bed_exit_not_returned
        )
        return self.gen.event(
            device,
            f"{self.run_id}-{self._n:07d}",
            event_type,
            sensor=None,
            data=data,
            send=device not in self.offline,
        )

    def _do(self, act: _Act) -> None:
        device = self.specs[act.device].device_id
        if act.what == "event":
            self._event(device, act.type, act.at_s)
        elif act.what == "drop":
            if device not in self.offline:
                self.offline.add(device)
                self.offline_max = max(self.offline_max, len(self.offline))
                self.status_touched.add(device)
                self.gen.status(device, "offline")  # what the broker sends as the will
        elif act.what == "back":
            if device in self.offline:
                self.offline.discard(device)
                self.gen.status(device, "online")
                self.gen.resend_now(device)
        elif act.what == "forever":
            ev = self._event(device, act.type, act.at_s)
            self._forever.append((ev, act.interval_s, act.max_sends))

    def run(self) -> None:
        """Until the simulated duration passes, ``stop`` is set or the message budget is
        spent; then up to ``drain_s`` real seconds for outstanding acks (with resends)."""
        gen = self.gen
        qos = self.scenario.telemetry.qos
        t0 = time.monotonic()
        real_end = t0 + self.duration_s / self.speed
        sent = [0] * len(self._groups)
        next_act = 0
        last_resend = t0
        self.stopped_by = "duration"
        hold = self.offline.__contains__
        # A device that will drop announces itself first, as it did when it connected: the
        # platform only takes a will (an ``offline`` status) from a device it knows online.
        # Only these few: 95,000 retained statuses would be a broker's worth of litter.
        for index in sorted({a.device for a in self.plan if a.what == "drop"}):
            device = self.specs[index].device_id
            self.status_touched.add(device)
            gen.status(device, "online")
        while True:
            now = time.monotonic()
            if now >= real_end:
                break
            if self.stop.is_set():
                self.stopped_by = "stopped"
                break
            if self.messages >= self.max_messages:
                self.stopped_by = "max_messages"
                break
            sim_s = (now - t0) * self.speed
            while next_act < len(self.plan) and self.plan[next_act].at_s <= sim_s:
                self._do(self.plan[next_act])
                next_act += 1
            budget = self.max_messages - self.messages
            for g, (heartbeat, members) in enumerate(self._groups):
                due = int(sim_s * len(members) / heartbeat) - sent[g]
                for _ in range(max(0, min(due, budget))):
                    device = members[sent[g] % len(members)]
                    sent[g] += 1
                    if device not in self.offline:
                        gen.telemetry(device, qos=qos, pad_to=0)
                        budget -= 1
            for ev, interval, max_sends in self._forever:
                if ev.sends < max_sends and ev.device_id not in self.offline:
                    if now - ev.last_sent >= interval / self.speed:
                        gen.copy(ev)
            if now - last_resend >= 0.1:
                gen.resend_due(now, hold=hold)
                last_resend = now
            time.sleep(0.005)
        self.real_s = time.monotonic() - t0
        deadline = time.monotonic() + self.drain_s
        while time.monotonic() < deadline and not self.stop.is_set():
            if not [k for k in self._unsettled() if k[0] not in self.offline]:
                break
            gen.resend_due(hold=hold)
            time.sleep(0.05)
        # The retained statuses would otherwise stay on the broker for good, and every
        # gateway subscribing later (on a shared broker: someone else's) would get them.
        for device in sorted(self.status_touched):
            gen.clear_status(device)
        self.status_cleared = len(self.status_touched)

    def _unsettled(self) -> list[tuple[str, str]]:
        return [k for k, ev in list(self.gen.events.items()) if ev.acked is None and ev.rejected is None]

    def report(self) -> LoadReport:
        evs = list(self.gen.events.values())
        acked = sum(1 for e in evs if e.acked is not None)
        rejected = sum(1 for e in evs if e.acked is None and e.rejected is not None)
        st = self.gen.stats
        return LoadReport(
            identity=self.gen.username,
            devices=len(self.specs),
            real_s=round(self.real_s, 2),
            telemetry_sent=st.telemetry_sent,
            events_sent=st.events_sent,
            events_acked=acked,
            events_rejected=rejected,
            events_pending=len(evs) - acked - rejected,
            resends=st.resends,
            status_sent=st.status_sent,
            status_cleared=self.status_cleared,
            acks_seen=st.acks_seen,
            acks_observed=self.gen.acks_observed,
            ack_latency=_summary(self.gen.ack_latencies_ms()),
            offline_max=self.offline_max,
            publish_errors=st.publish_errors,
            stopped_by=self.stopped_by,
        )


def _summary(values_ms: Sequence[float]) -> LatencySummary:
    d = latency_summary(values_ms)
    return LatencySummary(
        count=int(d["count"] or 0),
        p50_ms=d["p50"],
        p90_ms=d["p90"],
        p99_ms=d["p99"],
        max_ms=d["max"],
    )


# --------------------------------------------------------------------------- fleet run


class FleetStats(BaseModel):
    """A live snapshot of a fleet run, for progress bars and plain progress lines."""

    model_config = ConfigDict(frozen=True)

    elapsed_s: float
    planned_s: float  # real seconds the run will take (simulated duration / speed)
    devices: int
    connections_planned: int
    connections_online: int
    load_devices: int
    messages: int
    max_messages: int
    msgs_per_s: float
    telemetry_sent: int
    events_sent: int
    events_acked: int
    acks_received: int
    resends: int
    offline_devices: int
    conn_ack_p50_ms: float | None
    conn_ack_p99_ms: float | None
    load_ack_p50_ms: float | None
    load_ack_p99_ms: float | None


class OpenFiles(BaseModel):
    """RLIMIT_NOFILE of the simulator process: what it was, what the run raised it to."""

    model_config = ConfigDict(frozen=True)

    soft_before: int
    hard_before: int
    soft_after: int
    hard_after: int


class FleetReport(BaseModel):
    """A fleet run: which mode ran for how many devices, and what each part saw."""

    model_config = ConfigDict(frozen=True)

    mode: str  # "connections", "load", or "mixed"
    modes: list[str]  # the parts that ran: "connections" and/or "load"
    scenario: str
    target: str  # host:port of the broker
    speed: float
    seed: int
    devices: int
    connected_devices: int  # devices planned with a connection of their own
    connections_held: int  # the most of them online at once
    load_mode_devices: int
    max_connections: int | None
    open_files: OpenFiles
    fd_soft_limit: int
    fd_hard_limit: int
    simulated_s: float
    real_s: float
    max_messages: int
    stopped_by: str  # "duration", "max_messages" or "stopped" (signal)
    messages: int  # MQTT publishes by the simulator: telemetry, events, resends, status
    msgs_per_s: float
    events_sent: int
    events_acked: int
    acks_received: int
    resends: int
    ack_latency: dict[str, LatencySummary]  # per part: "connections", "load"
    connections: SimReport | None
    load: LoadReport | None
    setup: FleetSetup | None = None
    events_stored: int | None = None  # checked in the database after the run, when it could be


def _conn_messages(st: SimStats | None) -> int:
    return 0 if st is None else st.telemetry_sent + st.events_raised + st.resends


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
    observer_username: str | None = None,
    observer_password: str | None = None,
    max_connections: int | None = None,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    allow_remote: bool = False,
    stop: asyncio.Event | None = None,
    on_stats: Callable[[FleetStats], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
    stats_interval_s: float = 1.0,
    seed: int = 1,
    drain_s: float = 10.0,
) -> FleetReport:
    """Run up to 100,000 devices for ``duration_s`` simulated seconds: as many with their
    own connection as the descriptor limit (and ``max_connections``) allows, the rest
    through the privileged load generator, which plays their share of the scenario.

    Stops by itself: at the end of the duration, when ``max_messages`` publishes were
    made, or when ``stop`` is set. Acks in load mode are read by a second connection as
    ``observer_username`` (the platform account on a broker with an ACL: a device,
    privileged or not, may read only its own downlink); without one, as the load
    generator itself, which works on an anonymous broker."""
    check_host(host, allow_remote=allow_remote)
    if not specs:
        raise ValueError("no devices")
    if len(specs) > MAX_DEVICES:
        raise ValueError(f"at most {MAX_DEVICES} devices")
    if duration_s <= 0:
        raise ValueError("duration_s must be positive")
    if max_messages < 1:
        raise ValueError("max_messages must be positive")
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = raise_fd_limit(len(specs) + FD_RESERVE)
    real_n, load_n = plan_modes(len(specs), soft, max_connections=max_connections)
    if load_n and loadgen_username is None:
        raise ValueError(
            f"{load_n} devices do not fit in {soft} descriptors: load mode needs the privileged "
            "load-generator identity (provision_fleet registers one)"
        )
    say = on_progress or (lambda _m: None)
    say(
        f"fleet: {len(specs)} devices; open-files limit {soft} (hard {hard}, was {before[0]}); "
        f"{real_n} with their own connection, {load_n} in load mode"
    )
    conn_scen, load_scen = split_scenario(scenario, real_n, load_n)
    stop = stop or asyncio.Event()
    speed = clock.speed
    t0 = time.monotonic()

    load: LoadRun | None = None
    load_thread: threading.Thread | None = None
    if load_n:
        # Started first, on purpose: paho's network loop uses select(), which cannot watch
        # a descriptor numbered 1024 or above; opened before the per-device sockets, the
        # load generator's sockets get low numbers.
        gen = LoadGenerator(
            host,
            port,
            username=loadgen_username,
            password=loadgen_password,
            ack_username=observer_username,
            ack_password=observer_password,
            client_id=f"{loadgen_username}-{secrets.token_hex(3)}",
            allow_remote=allow_remote,
            resend_s=scenario.resend.initial_s / speed,
            resend_factor=scenario.resend.factor,
            resend_max_s=scenario.resend.max_s / speed,
        )
        await asyncio.to_thread(gen.start)
        if gen.acks_observed is False:
            say("load mode: the broker refused the ack subscription; load-mode acks are not observed")
        load = LoadRun(
            gen,
            specs[real_n:],
            load_scen,
            speed=speed,
            duration_s=duration_s,
            max_messages=max_messages,
            seed=seed,
            drain_s=drain_s,
        )
        load_thread = threading.Thread(target=load.run, name="fleet-loadgen", daemon=True)
        load_thread.start()

    latest: list[SimStats] = []
    peak_online = 0

    def snapshot(prev: tuple[float, int]) -> FleetStats:
        nonlocal peak_online
        cs = latest[-1] if latest else None
        peak_online = max(peak_online, cs.online if cs else 0)
        lm = load.messages if load else 0
        msgs = _conn_messages(cs) + lm
        now = time.monotonic()
        rate = (msgs - prev[1]) / max(1e-6, now - prev[0])
        lat = sorted(load.gen.ack_latencies_ms()) if load else []
        lst = load.gen.stats if load else None
        return FleetStats(
            elapsed_s=round(now - t0, 1),
            planned_s=round(duration_s / speed, 1),
            devices=len(specs),
            connections_planned=real_n,
            connections_online=cs.online if cs else 0,
            load_devices=load_n,
            messages=msgs,
            max_messages=max_messages,
            msgs_per_s=round(rate, 1),
            telemetry_sent=(cs.telemetry_sent if cs else 0) + (lst.telemetry_sent if lst else 0),
            events_sent=(cs.events_raised if cs else 0) + (lst.events_sent if lst else 0),
            events_acked=(cs.events_received if cs else 0)
            + (sum(1 for e in list(load.gen.events.values()) if e.acked is not None) if load else 0),
            acks_received=(cs.events_received if cs else 0) + (lst.acks_seen if lst else 0),
            resends=(cs.resends if cs else 0) + (lst.resends if lst else 0),
            offline_devices=(cs.silent if cs else 0) + (len(load.offline) if load else 0),
            conn_ack_p50_ms=cs.ack_p50_ms if cs else None,
            conn_ack_p99_ms=cs.ack_p99_ms if cs else None,
            load_ack_p50_ms=round(percentile(lat, 0.5), 2) if lat else None,
            load_ack_p99_ms=round(percentile(lat, 0.99), 2) if lat else None,
        )

    async def monitor() -> None:
        prev = (t0, 0)
        while True:
            await asyncio.sleep(stats_interval_s)
            st = snapshot(prev)
            prev = (time.monotonic(), st.messages)
            if on_stats is not None:
                on_stats(st)
            if st.messages >= max_messages and not stop.is_set():
                say(f"message budget of {max_messages} spent: stopping")
                stop.set()

    async def wait_load() -> None:
        if load_thread is not None:
            await asyncio.to_thread(load_thread.join)

    mon = asyncio.create_task(monitor())
    conn_report: SimReport | None = None
    try:
        if real_n:
            conn_report = await run_simulation(
                host=host,
                port=port,
                devices=specs[:real_n],
                scenario=conn_scen,
                clock=clock,
                duration_s=duration_s,
                stop=stop,
                allow_remote=allow_remote,
                seed=seed,
                on_progress=latest.append,
                progress_interval_s=stats_interval_s,
            )
        else:
            waiter = asyncio.create_task(stop.wait())
            loader = asyncio.create_task(wait_load())
            await asyncio.wait({waiter, loader}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        if load is not None and stop.is_set():
            load.stop.set()
        await wait_load()
    finally:
        if load is not None:
            load.stop.set()
            await wait_load()
            await asyncio.to_thread(load.gen.close)
        mon.cancel()
        await asyncio.gather(mon, return_exceptions=True)
    final = snapshot((t0, 0))
    if on_stats is not None:
        on_stats(final)
    load_report = load.report() if load is not None else None
    real_s = time.monotonic() - t0
    messages = _conn_messages(latest[-1] if latest else None) + (load.messages if load else 0)
    if conn_report is not None:
        messages = conn_report.telemetry_sent + conn_report.sends + (load.messages if load else 0)
    modes = (["connections"] if real_n else []) + (["load"] if load_n else [])
    if load_report is not None and load_report.stopped_by != "duration":
        stopped_by = load_report.stopped_by
    else:
        stopped_by = "stopped" if stop.is_set() else "duration"
    if messages >= max_messages:
        stopped_by = "max_messages"
    latency: dict[str, LatencySummary] = {}
    if conn_report is not None:
        latency["connections"] = conn_report.ack_latency
    if load_report is not None:
        latency["load"] = load_report.ack_latency
    return FleetReport(
        mode="mixed" if len(modes) == 2 else modes[0],
        modes=modes,
        scenario=scenario.name,
        target=f"{host}:{port}",
        speed=speed,
        seed=seed,
        devices=len(specs),
        connected_devices=real_n,
        connections_held=max(peak_online, conn_report.online_at_end if conn_report else 0),
        load_mode_devices=load_n,
        max_connections=max_connections,
        open_files=OpenFiles(soft_before=before[0], hard_before=before[1], soft_after=soft, hard_after=hard),
        fd_soft_limit=soft,
        fd_hard_limit=hard,
        simulated_s=round(
            conn_report.simulated_s if conn_report else (load.real_s if load else 0.0) * speed, 1
        ),
        real_s=round(real_s, 2),
        max_messages=max_messages,
        stopped_by=stopped_by,
        messages=messages,
        msgs_per_s=round(messages / max(real_s, 1e-6), 1),
        events_sent=(conn_report.events_raised if conn_report else 0)
        + (load_report.events_sent if load_report else 0),
        events_acked=(conn_report.events_received if conn_report else 0)
        + (load_report.events_acked if load_report else 0),
        acks_received=final.acks_received,
        resends=(conn_report.resends if conn_report else 0) + (load_report.resends if load_report else 0),
        ack_latency=latency,
        connections=conn_report,
        load=load_report,
    )

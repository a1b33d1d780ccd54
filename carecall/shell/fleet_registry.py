"""The registry side of a simulated fleet: the homes, residents and devices a county-scale
``carecall simulate`` (or ``carecall bench``) talks as, registered in the platform's database.

``provision_fleet`` bulk-inserts the registry such a run needs (one county → street →
community chain with staff on duty, homes, residents, devices, and the privileged
load-generator device) in a few statements, so a 100,000-device registry takes seconds.
``ensure_fleet`` does the same idempotently under a prefix and keeps the secrets of the
devices that will connect, and returns the ``DeviceSpec`` list the simulators run
(``simulators.fleet.run_fleet``), which know nothing of the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.secret_files import write_private_json
from device_gateway.credentials import hash_secret, verify_secret
from device_gateway.kinds import DEFAULT_HEARTBEAT_S, DeviceKind
from device_gateway.models import Device
from dispatcher.registry.models import Home, Resident, Staff, Station
from simulators.device import DeviceSpec
from simulators.fleet import MAX_DEVICES, FleetReport

log = logging.getLogger(__name__)

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
    """Mode 0600, atomically: these are live credentials of registered devices."""
    write_private_json(path, {"prefix": prefix, "secrets": kept}, indent=0)


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
    rerun does not rekey devices; a Mosquitto configured by ``carecall broker-config`` only
    needs it rerun (broker stopped) after a run that issued new ones.
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


class SimulateReport(FleetReport):
    """What ``carecall simulate`` prints: the fleet run, with the registry side of it."""

    setup: FleetSetup | None = None
    events_stored: int | None = None  # checked in the database after the run, when it could be


async def events_stored(
    maker: async_sessionmaker[AsyncSession], prefix: str, *, since: datetime
) -> int | None:
    """Device events the platform stored for the fleet's devices since ``since``."""
    from sqlalchemy import func

    from device_gateway.models import DeviceEvent

    async with maker() as session:
        return await session.scalar(
            select(func.count())
            .select_from(DeviceEvent)
            .where(
                DeviceEvent.device_id.startswith(f"{prefix}-d", autoescape=True),
                DeviceEvent.source == "device",
                DeviceEvent.received_at >= since,
            )
        )

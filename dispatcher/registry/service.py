"""Device enrolment and registry look-ups used by the CLI, the API and the demo.

A device secret is shown exactly once, when it is issued; the database keeps only its
Mosquitto-compatible hash, so losing the secret means re-keying, never recovering it.
These functions work inside the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from device_gateway.credentials import generate_secret, hash_secret
from device_gateway.kinds import DEFAULT_HEARTBEAT_S, DeviceKind
from device_gateway.models import Device
from device_gateway.store import ResidentVitals
from dispatcher.registry.models import Contact, Home, Resident, Staff, Station
from dispatcher.registry.schemas import ID_RE


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")


def _parse_kind(kind: str) -> DeviceKind:
    try:
        return DeviceKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in DeviceKind)
        raise ValueError(f"unknown device kind {kind!r}; use one of {allowed}") from None


def _set_secret(device: Device, secret: str, now: datetime) -> None:
    device.secret_hash = hash_secret(secret)
    # rekeyed_at records when the current secret was issued, including the first one.
    device.rekeyed_at = now


async def issue_device(
    session: AsyncSession,
    *,
    device_id: str,
    home_id: str,
    kind: str | None = None,
    model: str | None = None,
    now: datetime,
) -> str:
    """Register a new device or re-key an existing one; returns the new plaintext secret.

    Re-keying an existing device invalidates its old secret at once. A device is not moved
    between homes here (a typo would silently re-route its alarms); move it with a devices
    file import instead.
    """
    _require_aware(now)
    if not ID_RE.match(device_id):
        raise ValueError(f"invalid device id {device_id!r}: use 1-64 letters, digits, '_' or '-'")
    parsed_kind = _parse_kind(kind) if kind is not None else None
    if model is not None and len(model) > 64:
        raise ValueError("device model must be at most 64 characters")
    if await session.get(Home, home_id) is None:
        raise ValueError(f"unknown home {home_id!r}")

    secret = generate_secret()
    device = await session.get(Device, device_id)
    if device is None:
        if parsed_kind is None:
            raise ValueError(f"device {device_id!r} is new: its kind is required")
        device = Device(
            id=device_id,
            home_id=home_id,
            kind=parsed_kind.value,
            model=model or "",
            heartbeat_s=DEFAULT_HEARTBEAT_S[parsed_kind],
            enabled=True,
            privileged=False,
            created_at=now,
        )
        session.add(device)
    else:
        if device.home_id != home_id:
            raise ValueError(
                f"device {device_id!r} belongs to home {device.home_id!r}, not {home_id!r}; "
                "move it with a devices import before re-keying"
            )
        if parsed_kind is not None and parsed_kind.value != device.kind:
            raise ValueError(
                f"device {device_id!r} is a {device.kind}, not a {parsed_kind.value}; "
                "a different kind of device needs its own id"
            )
        if model is not None:
            device.model = model
    _set_secret(device, secret, now)
    await session.flush()
    return secret


async def rekey_existing(
    session: AsyncSession, *, device_ids: Iterable[str], now: datetime
) -> dict[str, str]:
    """Issue fresh secrets to existing devices; unknown ids raise before anything changes."""
    _require_aware(now)
    wanted = list(dict.fromkeys(device_ids))
    found = {d.id: d for d in (await session.scalars(select(Device).where(Device.id.in_(wanted)))).all()}
    missing = [d for d in wanted if d not in found]
    if missing:
        raise ValueError(f"unknown device(s): {', '.join(sorted(missing))}")
    secrets: dict[str, str] = {}
    for device_id in wanted:
        secrets[device_id] = generate_secret()
        _set_secret(found[device_id], secrets[device_id], now)
    await session.flush()
    return secrets


async def issue_missing(session: AsyncSession, *, now: datetime) -> dict[str, str]:
    """A first secret for every device that has none yet (imported or provisioned without
    one), by id; devices that already have a secret keep it."""
    _require_aware(now)
    devices = (
        await session.scalars(
            select(Device)
            .where(or_(Device.secret_hash.is_(None), Device.secret_hash == ""))
            .order_by(Device.id)
        )
    ).all()
    secrets: dict[str, str] = {}
    for device in devices:
        secrets[device.id] = generate_secret()
        _set_secret(device, secrets[device.id], now)
    await session.flush()
    return secrets


async def get_device(session: AsyncSession, *, device_id: str) -> Device | None:
    return await session.get(Device, device_id)


async def set_device_enabled(session: AsyncSession, *, device_id: str, enabled: bool) -> None:
    """Disabling keeps the device and its history; the gateway refuses its messages."""
    device = await session.get(Device, device_id)
    if device is None:
        raise ValueError(f"unknown device {device_id!r}")
    device.enabled = enabled
    await session.flush()


async def registry_counts(session: AsyncSession) -> dict[str, int]:
    """Row counts for health pages and the demo banner; keyed by registry kind."""
    counts: dict[str, int] = {}
    for name, model in (
        ("stations", Station),
        ("staff", Staff),
        ("homes", Home),
        ("residents", Resident),
        ("contacts", Contact),
        ("devices", Device),
    ):
        counts[name] = await session.scalar(select(func.count()).select_from(model)) or 0
    counts["devices_enabled"] = (
        await session.scalar(select(func.count()).where(Device.enabled.is_(True))) or 0
    )
    counts["devices_keyed"] = (
        await session.scalar(select(func.count()).where(Device.secret_hash.is_not(None))) or 0
    )
    return counts


_IN_CHUNK = 10_000


async def resident_vitals(session: AsyncSession, *, home_ids: Sequence[str]) -> dict[str, ResidentVitals]:
    """Home id → the facts its most dependent resident's vitals are watched with (the
    gateway's rules; homes without a resident are absent). The shell hands this lookup to
    the gateway (device_gateway.store.ResidentLookup): the edge does not read residents."""
    found: dict[str, ResidentVitals] = {}
    # In chunks: asyncpg refuses a statement with more than 32,767 parameters, and a
    # county-scale registry (carecall simulate --devices 100000) has more homes than that.
    homes = sorted(set(home_ids))
    for start in range(0, len(homes), _IN_CHUNK):
        res = await session.scalars(
            select(Resident)
            .where(Resident.home_id.in_(homes[start : start + _IN_CHUNK]))
            .order_by(Resident.capacity_level.desc())
        )
        for r in res:
            if r.home_id not in found:  # most dependent resident first
                found[r.home_id] = ResidentVitals(
                    capacity_level=r.capacity_level,
                    hr_min=r.hr_min,
                    hr_max=r.hr_max,
                    rr_min=r.rr_min,
                    rr_max=r.rr_max,
                )
    return found

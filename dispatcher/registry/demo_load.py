"""Writing the demo county (``dispatcher.registry.demo_county``) into an empty registry,
and re-issuing device secrets the demo has lost.

The county goes in through the same checks and upsert as a registry file
(``dispatcher.registry.upsert``), one kind after another, in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.db import session_scope
from device_gateway.credentials import generate_secret, hash_secret
from device_gateway.models import Device
from dispatcher.registry.demo_county import DemoCounty, generate_demo_county
from dispatcher.registry.files import KINDS
from dispatcher.registry.models import Station
from dispatcher.registry.service import rekey_existing
from dispatcher.registry.upsert import apply_rows


async def _has_stations(session: AsyncSession) -> bool:
    return await session.scalar(select(Station.id).limit(1)) is not None


async def load_demo_county(
    maker: async_sessionmaker[AsyncSession], county: DemoCounty | None = None, *, now: datetime
) -> dict[str, str]:
    """Load the county into an empty registry and issue every device a secret.

    Returns {device_id: secret}; the secrets exist nowhere else, so the demo must keep
    them (or call ``rekey_devices``). A registry that already has stations is left alone
    and ``{}`` is returned, so starting the demo twice is harmless.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    async with maker() as session:
        if await _has_stations(session):
            return {}
    county = county or generate_demo_county()
    secrets = {d.id: generate_secret() for d in county.devices}
    hashes = await asyncio.to_thread(lambda: {k: hash_secret(v) for k, v in secrets.items()})
    try:
        async with session_scope(maker) as session:
            if await _has_stations(session):  # loaded while we were hashing
                return {}
            for kind in KINDS:
                rows = list(enumerate(county.rows(kind), start=2))
                await apply_rows(session, kind=kind, rows=rows, file=f"demo {kind}", now=now)
            for device in (await session.scalars(select(Device))).all():
                device.secret_hash = hashes[device.id]
                device.rekeyed_at = now
    except IntegrityError:
        # Another process loaded the demo between our check and our insert.
        async with maker() as session:
            if await _has_stations(session):
                return {}
        raise
    return secrets


async def rekey_devices(
    maker: async_sessionmaker[AsyncSession], device_ids: Sequence[str], *, now: datetime
) -> dict[str, str]:
    """Re-issue secrets the demo has lost; old secrets stop working. One transaction."""
    async with session_scope(maker) as session:
        return await rekey_existing(session, device_ids=device_ids, now=now)

"""Personal data by role, and the record of who read which resident.

Residents' health conditions are sensitive personal information (PIPL art. 28): only
people who handle a call need them. The role matrix (docs/privacy.md):

* operators and admins handle calls and keep the registry: everything;
* supervisors audit response times and outcomes: no health data (conditions, notes,
  vital signs), no birth date (age stays), names reduced to the family name
  (``王**``), relatives' names and phone numbers masked.

Redaction happens on the API's output models, after scope checks, so every route that
embeds resident data applies the same rule. Every read of a resident's record or of a
call's details with resident data writes a ``record_reads`` row (user, resident, route,
call); admins list them at ``GET /api/v1/record-reads`` (``dispatcher.auth.views``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.logs import mask_phone
from dispatcher.auth.models import RecordRead, Role
from dispatcher.auth.principals import Principal

# Roles that see residents' health data and relatives' contacts in full.
FULL_ACCESS = frozenset({Role.admin, Role.operator})


def sees_health_data(who: Principal) -> bool:
    return who.role in FULL_ACCESS


def mask_name(name: str | None) -> str | None:
    """Keep the first character (the family name in Chinese), star the rest: 王秀英 → 王**."""
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)


def mask_number(phone: str) -> str:
    masked = mask_phone(phone)
    if masked == phone and phone:  # not phone-like: keep only its length's shape
        return "*" * len(phone)
    return masked


def redact_resident(data: dict[str, Any]) -> dict[str, Any]:
    """A resident (API dict) as a supervisor may see it."""
    out = dict(data)
    out["name"] = mask_name(out.get("name"))
    for key, empty in (("conditions", []), ("notes", ""), ("birth_date", None)):
        if key in out:
            out[key] = empty
    for key in ("hr_min", "hr_max", "rr_min", "rr_max"):
        if key in out:
            out[key] = None
    if "contacts" in out:
        out["contacts"] = [
            {**c, "name": mask_name(c.get("name")), "phone": mask_number(str(c.get("phone", "")))}
            for c in out["contacts"]
        ]
    return out


def redact_event_data(data: dict[str, Any]) -> dict[str, Any]:
    """Device event data without vital signs (health data); other fields stay."""
    return {k: v for k, v in data.items() if k not in ("hr", "rr", "vitals", "spo2", "bp", "temp")}


async def record_reads(
    session: AsyncSession,
    *,
    who: Principal,
    resident_ids: Iterable[str | None],
    route: str,
    call_id: int | None = None,
    now: datetime,
) -> None:
    """Add one ``record_reads`` row per resident (the caller commits)."""
    for rid in sorted({r for r in resident_ids if r}):
        session.add(
            RecordRead(
                at=now,
                user_id=who.user_id,
                username=who.username,
                role=who.role.value,
                resident_id=rid,
                route=route[:200],
                call_id=call_id,
            )
        )


async def log_reads(
    maker: async_sessionmaker[AsyncSession],
    *,
    who: Principal,
    resident_ids: Iterable[str | None],
    route: str,
    call_id: int | None = None,
    now: datetime,
) -> None:
    """``record_reads`` in a transaction of its own."""
    ids = [r for r in resident_ids if r]
    if not ids:
        return
    async with maker() as session, session.begin():
        await record_reads(session, who=who, resident_ids=ids, route=route, call_id=call_id, now=now)


async def list_record_reads(
    session: AsyncSession,
    *,
    resident_id: str | None,
    username: str | None,
    since: datetime | None,
    limit: int,
    offset: int,
) -> tuple[list[RecordRead], int]:
    """One page of ``record_reads`` (newest first) matching the filters, and how many match."""
    stmt = select(RecordRead)
    if resident_id is not None:
        stmt = stmt.where(RecordRead.resident_id == resident_id)
    if username is not None:
        stmt = stmt.where(RecordRead.username == username)
    if since is not None:
        stmt = stmt.where(RecordRead.at >= since)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = (await session.scalars(stmt.order_by(RecordRead.id.desc()).limit(limit).offset(offset))).all()
    return list(rows), total

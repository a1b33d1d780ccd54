"""Registry rows into the database: the checks one row cannot make on its own (duplicate
ids, links to records that do not exist, the station tree) and the upsert by id.

Shared by file import (``dispatcher.registry.importing``) and the demo county. These
functions work inside the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from device_gateway.credentials import hash_secret
from device_gateway.models import Device
from dispatcher.registry.files import RegistryImportError, RowError
from dispatcher.registry.models import Contact, Home, Resident, Staff, Station, Tier
from dispatcher.registry.schemas import (
    EXPORT_COLUMNS,
    PARENT_TIER,
    DeviceRow,
    RegistryRow,
    ResidentRow,
    StationRow,
)

ORM: Final[dict[str, Any]] = {
    "stations": Station,
    "staff": Staff,
    "homes": Home,
    "residents": Resident,
    "devices": Device,
}
_CHUNK = 500


def plain(value: Any) -> Any:
    return value.value if isinstance(value, StrEnum) else value


def values_of(kind: str, obj: Any) -> dict[str, Any]:
    """The stored row as python values in schema field names (the inverse of writing)."""
    values = {c: getattr(obj, c) for c in EXPORT_COLUMNS[kind] if c != "contacts"}
    if kind == "residents":
        values["conditions"] = list(obj.conditions or [])
        values["contacts"] = [
            {
                "name": c.name,
                "relation": c.relation,
                "phone": c.phone,
                "priority": c.priority,
                "channels": c.channels or "",
            }
            for c in obj.contacts
        ]
    return values


async def load_by_ids(session: AsyncSession, *, kind: str, ids: Iterable[str]) -> dict[str, Any]:
    model = ORM[kind]
    wanted = sorted(set(ids))
    found: dict[str, Any] = {}
    for start in range(0, len(wanted), _CHUNK):
        stmt = select(model).where(model.id.in_(wanted[start : start + _CHUNK]))
        if kind == "residents":
            stmt = stmt.options(selectinload(Resident.contacts))
        for obj in (await session.scalars(stmt)).all():
            found[obj.id] = obj
    return found


async def _existing_ids(session: AsyncSession, model: Any, ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        result = await session.scalars(select(model.id).where(model.id.in_(wanted[start : start + _CHUNK])))
        found.update(result.all())
    return found


async def check_references(
    session: AsyncSession,
    *,
    kind: str,
    rows: Sequence[tuple[int, RegistryRow]],
    file: str,
    bad_rows: Mapping[str, int] | None = None,
) -> list[RowError]:
    """Problems a single row cannot show: duplicate ids, and links to rows that do not exist.

    ``bad_rows`` (id -> row) names rows of the same file that failed validation, so a
    child of a broken row is told why its parent is missing.
    """
    errors: list[RowError] = []
    bad_rows = bad_rows or {}
    first_row: dict[str, int] = {}
    for number, row in rows:
        if row.id in first_row:
            errors.append(RowError.of(file, number, "duplicate_id", "id", row.id, row=first_row[row.id]))
        else:
            first_row[row.id] = number

    if kind == "stations":
        errors += await _check_station_tree(session, rows, file, first_row, bad_rows)
        return errors

    target_kind, column = {
        "staff": ("stations", "station_id"),
        "homes": ("stations", "station_id"),
        "residents": ("homes", "home_id"),
        "devices": ("homes", "home_id"),
    }[kind]
    refs = {getattr(row, column) for _, row in rows}
    known = await _existing_ids(session, ORM[target_kind], refs)
    noun = target_kind.removesuffix("s")
    for number, row in rows:
        ref = getattr(row, column)
        if ref not in known:
            errors.append(
                RowError.of(file, number, "unknown_ref", column, ref, noun=noun, ref=ref, kind=target_kind)
            )
    return errors


async def _check_station_tree(
    session: AsyncSession,
    rows: Sequence[tuple[int, RegistryRow]],
    file: str,
    first_row: Mapping[str, int],
    bad_rows: Mapping[str, int],
) -> list[RowError]:
    """Dispatch escalates up the tree, so every parent must exist one tier up.

    A parent may come from the database or from an earlier row of the same file, which
    lets one file build the whole tree top-down.
    """
    errors: list[RowError] = []
    result = await session.execute(select(Station.id, Station.tier, Station.parent_id))
    stored = {sid: (tier, parent) for sid, tier, parent in result.all()}
    final = dict(stored)
    stations: list[tuple[int, StationRow]] = [(n, r) for n, r in rows if isinstance(r, StationRow)]
    for _, row in stations:
        final[row.id] = (row.tier.value, row.parent_id)

    seen: set[str] = set()
    for number, row in stations:
        parent = row.parent_id
        if parent is not None:
            if parent not in stored and parent not in seen:
                if parent in first_row:
                    error = RowError.of(
                        file,
                        number,
                        "parent_later",
                        "parent_id",
                        parent,
                        parent=parent,
                        row=first_row[parent],
                    )
                elif parent in bad_rows:
                    error = RowError.of(
                        file,
                        number,
                        "parent_broken",
                        "parent_id",
                        parent,
                        parent=parent,
                        row=bad_rows[parent],
                    )
                else:
                    error = RowError.of(file, number, "unknown_parent", "parent_id", parent, parent=parent)
                errors.append(error)
            else:
                parent_tier = final[parent][0]
                expected = PARENT_TIER[row.tier]
                if expected is not None and parent_tier != expected.value:
                    errors.append(
                        RowError.of(
                            file,
                            number,
                            "parent_tier",
                            "parent_id",
                            parent,
                            parent=parent,
                            parent_tier=parent_tier,
                            tier=row.tier.value,
                            expected=expected.value,
                        )
                    )
        seen.add(row.id)

    # A changed tier must not strand stored children that this file does not move.
    in_file = {row.id: number for number, row in stations}
    for child, (child_tier, parent) in final.items():
        if child in in_file or parent not in in_file:
            continue
        expected = PARENT_TIER[Tier(child_tier)]
        parent_tier = final[parent][0]
        if expected is not None and parent_tier != expected.value:
            errors.append(
                RowError.of(
                    file,
                    in_file[parent],
                    "strands_child",
                    "tier",
                    parent=parent,
                    parent_tier=parent_tier,
                    child=child,
                    child_tier=child_tier,
                    expected=expected.value,
                )
            )
    return errors


def _assign(kind: str, obj: Any, row: RegistryRow, now: datetime, *, is_new: bool) -> None:
    for column in EXPORT_COLUMNS[kind]:
        if column == "contacts":
            continue
        setattr(obj, column, plain(getattr(row, column)))
    if isinstance(row, ResidentRow):
        wanted = [(c.name, c.relation, c.phone, c.priority, c.channels) for c in row.contacts]
        current = (
            []
            if is_new
            else [(c.name, c.relation, c.phone, c.priority, c.channels or "") for c in obj.contacts]
        )
        # Rewriting identical contacts would churn their ids on every re-import.
        if is_new or wanted != current:
            obj.contacts = [
                Contact(name=n, relation=r, phone=p, priority=pr, channels=ch) for n, r, p, pr, ch in wanted
            ]
    if isinstance(row, DeviceRow) and row.secret is not None:
        obj.secret_hash = hash_secret(row.secret.get_secret_value())
        obj.rekeyed_at = now


async def write_rows(
    session: AsyncSession, *, kind: str, rows: Sequence[tuple[int, RegistryRow]], now: datetime
) -> tuple[int, int]:
    """Upsert already-checked rows in file order; returns (created, updated)."""
    existing = await load_by_ids(session, kind=kind, ids=(row.id for _, row in rows))
    created = updated = 0
    for _, row in rows:
        obj = existing.get(row.id)
        if obj is None:
            obj = ORM[kind]()
            if isinstance(row, DeviceRow):
                obj.created_at = now
                obj.privileged = False
                obj.secret_hash = None
            _assign(kind, obj, row, now, is_new=True)
            obj.id = row.id
            session.add(obj)
            existing[row.id] = obj
            created += 1
        else:
            _assign(kind, obj, row, now, is_new=False)
            updated += 1
        if kind == "stations":
            # Parents precede children in the file; flushing keeps that order for the FK.
            await session.flush()
    await session.flush()
    return created, updated


async def apply_rows(
    session: AsyncSession,
    *,
    kind: str,
    rows: Sequence[tuple[int, RegistryRow]],
    file: str,
    now: datetime,
) -> tuple[int, int]:
    """Check references then write; raises RegistryImportError and writes nothing on any problem."""
    errors = await check_references(session, kind=kind, rows=rows, file=file)
    if errors:
        raise RegistryImportError(file, errors)
    return await write_rows(session, kind=kind, rows=rows, now=now)

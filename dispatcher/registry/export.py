"""Registry files out: every record of one kind as CSV (UTF-8) or XLSX, in the columns
an import reads, so every export re-imports. Device secrets are never exported.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from carecall.core.tabular import csv_bytes, xlsx_bytes
from dispatcher.registry.files import FORMATS, KINDS, CellValue
from dispatcher.registry.models import Resident
from dispatcher.registry.schemas import EXPORT_COLUMNS, encode_conditions, encode_contact
from dispatcher.registry.upsert import ORM, plain, values_of


def _export_cell(column: str, value: Any) -> CellValue:
    if column == "contacts":
        ordered = sorted(value, key=lambda c: c["priority"])
        return "; ".join(
            encode_contact(c["name"], c["relation"], c["phone"], c.get("channels", "")) for c in ordered
        )
    if column == "conditions":
        return encode_conditions(list(value))
    value = plain(value)
    if value is None or isinstance(value, str | int | float | bool | date):
        return value
    return str(value)


def _tree_order(stations: Sequence[Any]) -> list[Any]:
    """Parents before children, so an exported stations file re-imports in one pass."""
    parent_of = {s.id: s.parent_id for s in stations}

    def depth(sid: str) -> int:
        seen: set[str] = set()
        level = 0
        while (parent := parent_of.get(sid)) is not None and sid not in seen:
            seen.add(sid)
            sid = parent
            level += 1
        return level

    return sorted(stations, key=lambda s: (depth(s.id), s.id))


async def export_kind(
    maker: async_sessionmaker[AsyncSession], kind: str, fmt: Literal["csv", "xlsx"], out: Path
) -> int:
    """Write every row of ``kind`` to ``out``; returns the number of rows written."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use csv or xlsx")
    model = ORM[kind]
    stmt = select(model).order_by(model.id)
    if kind == "residents":
        stmt = stmt.options(selectinload(Resident.contacts))
    async with maker() as session:
        objs: list[Any] = list((await session.scalars(stmt)).all())
        if kind == "stations":
            objs = _tree_order(objs)
        columns = EXPORT_COLUMNS[kind]
        rows: list[list[CellValue]] = []
        for obj in objs:
            values = values_of(kind, obj)
            rows.append([_export_cell(c, values[c]) for c in columns])
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "csv":
        body = await asyncio.to_thread(csv_bytes, columns, rows, bom=False)
    else:
        body = await asyncio.to_thread(xlsx_bytes, columns, rows, sheet=kind)
    await asyncio.to_thread(tmp.write_bytes, body)
    # Replace in one step so a reader never sees half a file.
    await asyncio.to_thread(os.replace, tmp, out)
    return len(rows)

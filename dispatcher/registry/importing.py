"""Registry files in: CSV (UTF-8) and XLSX, one kind per file, upsert by id.

A county sends its registry as spreadsheets, and a half-applied spreadsheet would leave
beds pointing at stations that do not exist, so an import is all-or-nothing: every row
of every file is checked (shape and references) inside one transaction, nothing is
written when any row fails, and every problem is reported with the file, the row number a person sees in Excel or a text
editor (header = row 1) and a reason.

Columns left out of a file keep their stored values on existing rows; an empty cell in a
present column resets that field to its default. An optional ``secret`` column on a
devices file sets a factory-provisioned secret, otherwise an existing device keeps its
hash and a new one has none until issued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.db import session_scope
from device_gateway.changes import Publisher, announce_devices
from dispatcher.registry.files import (
    KINDS,
    RegistryImportError,
    RowError,
    Sheet,
    check_header,
    kind_of,
    read_sheet,
)
from dispatcher.registry.row_errors import row_errors
from dispatcher.registry.schemas import ID_RE, ROW_MODELS, RegistryRow
from dispatcher.registry.upsert import check_references, load_by_ids, values_of, write_rows


@dataclass(frozen=True)
class ImportReport:
    """What became of one file. ``checked``: valid, but not written because another file
    of the same import failed (an import is all-or-nothing)."""

    file: str
    kind: str
    status: Literal["applied", "checked", "failed", "skipped"]
    rows: int = 0
    created: int = 0
    updated: int = 0
    errors: tuple[RowError, ...] = field(default=())

    def summary(self) -> str:
        """One line for a person: what happened to this file."""
        if self.status == "applied":
            return f"{self.file}: {self.kind}, {self.rows} rows ({self.created} new, {self.updated} updated)"
        if self.status == "checked":
            return f"{self.file}: {self.kind}, {self.rows} rows valid, not written (another file failed)"
        if self.status == "skipped":
            return f"{self.file}: not checked (an earlier file failed)"
        count = len(self.errors)
        return f"{self.file}: refused, {count} problem{'s' if count != 1 else ''}"


async def _validate_sheet(
    session: AsyncSession, kind: str, sheet: Sheet, header: list[str], file: str
) -> tuple[list[tuple[int, RegistryRow]], list[RowError], dict[str, int]]:
    model = ROW_MODELS[kind]
    raw_rows: list[tuple[int, dict[str, str]]] = []
    errors: list[RowError] = []
    for number, cells in sheet.rows:
        if not any(cells):
            continue
        if any(cells[len(header) :]):
            errors.append(RowError.of(file, number, "extra_cells", columns=len(header)))
            continue
        raw_rows.append((number, dict(zip(header, cells, strict=False))))

    ids = [raw.get("id", "") for _, raw in raw_rows]
    existing = await load_by_ids(session, kind=kind, ids=(i for i in ids if ID_RE.match(i)))
    rows: list[tuple[int, RegistryRow]] = []
    bad_rows: dict[str, int] = {}
    for number, raw in raw_rows:
        stored = existing.get(raw.get("id", ""))
        merged: dict[str, Any] = values_of(kind, stored) if stored is not None else {}
        merged.update(raw)
        merged = {k: v for k, v in merged.items() if not (isinstance(v, str) and not v.strip())}
        try:
            rows.append((number, model.model_validate(merged)))
        except ValidationError as exc:
            errors += row_errors(file, number, exc)
            bad_rows.setdefault(raw.get("id", ""), number)
    return rows, errors, bad_rows


async def _apply_file(
    session: AsyncSession, path: Path, kind: str, now: datetime
) -> tuple[ImportReport, list[str]]:
    """Check one file and write it in the caller's transaction; raises RegistryImportError
    listing every problem (the caller rolls back)."""
    file = path.name
    sheet = await asyncio.to_thread(read_sheet, path)
    header = check_header(kind, sheet, file)
    rows, errors, bad_rows = await _validate_sheet(session, kind, sheet, header, file)
    errors += await check_references(session, kind=kind, rows=rows, file=file, bad_rows=bad_rows)
    if errors:
        raise RegistryImportError(file, sorted(errors, key=lambda e: e.row))
    created, updated = await write_rows(session, kind=kind, rows=rows, now=now)
    report = ImportReport(file, kind, "applied", rows=len(rows), created=created, updated=updated)
    return report, [row.id for _, row in rows] if kind == "devices" else []


async def import_file(
    maker: async_sessionmaker[AsyncSession],
    path: Path,
    kind: str | None = None,
    *,
    now: datetime | None = None,
    bus: Publisher | None = None,
    by: str = "import",
) -> ImportReport:
    """Import one file in one transaction; raises RegistryImportError listing every problem.

    A devices file's ids are announced on ``bus`` (channel ``devices``) after the commit:
    a row may switch a device off, set a new secret or create a device a gateway had
    cached as unknown."""
    path = Path(path)
    kind = kind_of(path, kind)
    async with session_scope(maker) as session:
        report, device_ids = await _apply_file(session, path, kind, now or datetime.now(UTC))
    if device_ids:
        await announce_devices(bus, device_ids, by=by)
    return report


class _Refused(Exception):
    """Rolls the whole import back."""


def _plan(paths: list[Path], kind: str | None) -> tuple[list[tuple[Path, str]], list[ImportReport]]:
    """Each file with its kind, parents first; or (nothing, the reports) when a file's
    kind cannot be told."""
    planned: list[tuple[Path, str]] = []
    for path in paths:
        try:
            planned.append((path, kind_of(path, kind)))
        except RegistryImportError as exc:
            return [], [
                ImportReport(p.name, "", "failed", errors=tuple(exc.errors))
                if p == path
                else ImportReport(p.name, "", "skipped")
                for p in paths
            ]
    planned.sort(key=lambda item: KINDS.index(item[1]))
    return planned, []


async def import_files(
    maker: async_sessionmaker[AsyncSession],
    paths: Iterable[Path],
    *,
    kind: str | None = None,
    now: datetime | None = None,
    bus: Publisher | None = None,
    by: str = "import",
) -> list[ImportReport]:
    """Import several files parents-first (stations, staff, homes, residents, devices) in
    ONE transaction: all of them are written, or none.

    A later file may refer to rows of an earlier one (homes to the stations above them).
    At the first file with a problem the import stops: that file's report carries its
    errors, the files before it are ``checked`` (valid, not written) and the files after
    it ``skipped`` (not checked, since they may refer to the refused rows).
    """
    plan, refused = _plan([Path(p) for p in paths], kind)
    if refused:
        return refused
    now = now or datetime.now(UTC)
    reports: list[ImportReport] = []
    device_ids: list[str] = []
    try:
        async with session_scope(maker) as session:
            for path, file_kind in plan:
                try:
                    report, ids = await _apply_file(session, path, file_kind, now)
                except RegistryImportError as exc:
                    reports.append(ImportReport(path.name, file_kind, "failed", errors=tuple(exc.errors)))
                    break
                reports.append(report)
                device_ids += ids
            if any(r.status == "failed" for r in reports):
                raise _Refused
    except _Refused:
        done = [replace(r, status="checked") if r.status == "applied" else r for r in reports]
        return done + [ImportReport(p.name, k, "skipped") for p, k in plan[len(reports) :]]
    if device_ids:
        await announce_devices(bus, device_ids, by=by)
    return reports

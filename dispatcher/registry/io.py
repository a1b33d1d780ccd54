"""Registry files in and out: CSV (UTF-8) and XLSX, one kind per file, upsert by id.

A county sends its registry as spreadsheets, and a half-applied spreadsheet would leave
beds pointing at stations that do not exist, so a file is all-or-nothing: every row is
checked (shape and references) inside one transaction before anything is written, and
every problem is reported with the file, the row number a person sees in Excel or a text
editor (header = row 1) and a reason.

Columns left out of a file keep their stored values on existing rows; an empty cell in a
present column resets that field to its default. Device secrets are never exported; an
optional ``secret`` column on import sets a factory-provisioned secret, otherwise an
existing device keeps its hash and a new one has none until issued.
"""

from __future__ import annotations

import asyncio
import csv
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from device_gateway.credentials import hash_secret
from dispatcher.db import session_scope
from dispatcher.models import Contact, Device, Home, Resident, Staff, Station, Tier
from dispatcher.registry.schemas import (
    EXPORT_COLUMNS,
    ID_RE,
    IMPORT_COLUMNS,
    PARENT_TIER,
    ROW_MODELS,
    DeviceRow,
    RegistryRow,
    ResidentRow,
    StationRow,
    encode_conditions,
)

KINDS: Final = ("stations", "staff", "homes", "residents", "devices")
FORMATS: Final = ("csv", "xlsx")

_ORM: Final[dict[str, Any]] = {
    "stations": Station,
    "staff": Staff,
    "homes": Home,
    "residents": Resident,
    "devices": Device,
}
_CHUNK = 500
_MAX_LISTED_ERRORS = 20

CellValue = str | int | float | bool | date | None


@dataclass(frozen=True)
class RowError:
    """One problem in a registry file. ``row`` counts the header as 1; 0 means the whole file."""

    file: str
    row: int
    reason: str
    column: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.row}" if self.row else self.file
        return f"{where}: {self.column}: {self.reason}" if self.column else f"{where}: {self.reason}"


class RegistryImportError(Exception):
    """A registry file was refused; nothing from it was written."""

    def __init__(self, file: str, errors: Sequence[RowError]) -> None:
        self.file = file
        self.errors = list(errors)
        lines = [str(e) for e in self.errors[:_MAX_LISTED_ERRORS]]
        if len(self.errors) > _MAX_LISTED_ERRORS:
            lines.append(f"... and {len(self.errors) - _MAX_LISTED_ERRORS} more")
        count = len(self.errors)
        super().__init__(f"{file}: refused, {count} problem{'s' if count != 1 else ''}:\n" + "\n".join(lines))


@dataclass(frozen=True)
class ImportReport:
    file: str
    kind: str
    status: Literal["applied", "failed", "skipped"]
    rows: int = 0
    created: int = 0
    updated: int = 0
    errors: tuple[RowError, ...] = field(default=())


@dataclass(frozen=True)
class _Sheet:
    header: list[str]
    rows: list[tuple[int, list[str]]]


# --------------------------------------------------------------------------- file kinds


def kind_of(path: Path, kind: str | None = None) -> str:
    """The registry kind of a file: given explicitly, or the file name (``homes-2023.xlsx``)."""
    if kind is not None:
        if kind not in KINDS:
            raise RegistryImportError(
                path.name,
                [RowError(path.name, 0, f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")],
            )
        return kind
    stem = path.stem.lower()
    for candidate in KINDS:
        if stem == candidate or (stem.startswith(candidate) and stem[len(candidate)] in "-_. "):
            return candidate
    raise RegistryImportError(
        path.name,
        [
            RowError(
                path.name,
                0,
                f"cannot tell the kind from the file name; name it {', '.join(KINDS)} "
                "(e.g. homes.csv) or pass the kind",
            )
        ],
    )


# --------------------------------------------------------------------------- reading files


def _cell_text(value: Any) -> str:
    """Spreadsheet cells arrive typed; validation works on the text a person typed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        # Excel stores every number as a float; phone numbers and levels must not gain ".0".
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip()


def _read_csv(path: Path) -> _Sheet:
    name = path.name
    rows: list[tuple[int, list[str]]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header: list[str] | None = None
            next_line = 1
            for record in reader:
                line, next_line = next_line, reader.line_num + 1
                if header is None:
                    header = [c.strip() for c in record]
                    continue
                rows.append((line, [c.strip() for c in record]))
    except UnicodeDecodeError as exc:
        raise RegistryImportError(
            name, [RowError(name, 0, f"not UTF-8 text (save it as 'CSV UTF-8'): {exc.reason}")]
        ) from exc
    except csv.Error as exc:
        raise RegistryImportError(name, [RowError(name, 0, f"malformed CSV: {exc}")]) from exc
    except OSError as exc:
        raise RegistryImportError(name, [RowError(name, 0, f"cannot read: {exc.strerror}")]) from exc
    if header is None:
        raise RegistryImportError(name, [RowError(name, 1, "empty file: expected a header row")])
    return _Sheet(header, rows)


def _read_xlsx(path: Path) -> _Sheet:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    name = path.name
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise RegistryImportError(name, [RowError(name, 0, f"not a readable .xlsx workbook: {exc}")]) from exc
    except OSError as exc:
        raise RegistryImportError(name, [RowError(name, 0, f"cannot read: {exc.strerror}")]) from exc
    try:
        if not wb.worksheets:
            raise RegistryImportError(name, [RowError(name, 0, "the workbook has no sheet")])
        header: list[str] | None = None
        rows: list[tuple[int, list[str]]] = []
        for number, values in enumerate(wb.worksheets[0].iter_rows(values_only=True), start=1):
            cells = [_cell_text(v) for v in values]
            if header is None:
                header = cells
            else:
                rows.append((number, cells))
    finally:
        wb.close()
    if header is None:
        raise RegistryImportError(name, [RowError(name, 1, "empty sheet: expected a header row")])
    return _Sheet(header, rows)


def _read_sheet(path: Path) -> _Sheet:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path)
    raise RegistryImportError(
        path.name,
        [RowError(path.name, 0, f"unsupported file type {suffix or '(none)'!r}; use .csv or .xlsx")],
    )


def _check_header(kind: str, sheet: _Sheet, name: str) -> list[str]:
    header = [h.strip().lower() for h in sheet.header]
    while header and not header[-1]:
        header.pop()
    problems: list[str] = []
    if not header or header[0] != "id":
        problems.append(f"the first column must be 'id', found {header[0] if header else 'nothing'!r}")
    allowed = IMPORT_COLUMNS[kind]
    for position, column in enumerate(header, start=1):
        if not column:
            problems.append(f"column {position} has no name")
        elif column not in allowed:
            known = ", ".join(EXPORT_COLUMNS[kind]) + (", secret" if kind == "devices" else "")
            problems.append(f"unknown column {column!r} for {kind}; known columns: {known}")
    duplicates = sorted({c for c in header if c and header.count(c) > 1})
    if duplicates:
        problems.append(f"repeated column(s): {', '.join(duplicates)}")
    if problems:
        raise RegistryImportError(name, [RowError(name, 1, p) for p in problems])
    return header


# --------------------------------------------------------------------------- database rows


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, StrEnum) else value


def _values_of(kind: str, obj: Any) -> dict[str, Any]:
    """The stored row as python values in schema field names (the inverse of writing)."""
    values = {c: getattr(obj, c) for c in EXPORT_COLUMNS[kind] if c != "contacts"}
    if kind == "residents":
        values["conditions"] = list(obj.conditions or [])
        values["contacts"] = [
            {"name": c.name, "relation": c.relation, "phone": c.phone, "priority": c.priority}
            for c in obj.contacts
        ]
    return values


async def _load_by_ids(session: AsyncSession, kind: str, ids: Iterable[str]) -> dict[str, Any]:
    model = _ORM[kind]
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
    kind: str,
    rows: Sequence[tuple[int, RegistryRow]],
    file: str,
    *,
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
            errors.append(
                RowError(file, number, f"duplicate id {row.id!r} (also on row {first_row[row.id]})", "id")
            )
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
    known = await _existing_ids(session, _ORM[target_kind], refs)
    noun = target_kind.removesuffix("s")
    for number, row in rows:
        ref = getattr(row, column)
        if ref not in known:
            errors.append(
                RowError(file, number, f"unknown {noun} {ref!r} (import {target_kind} first)", column)
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
                    reason = (
                        f"parent station {parent!r} comes later in this file "
                        f"(row {first_row[parent]}); list parent stations first"
                    )
                elif parent in bad_rows:
                    reason = f"parent station {parent!r} is on row {bad_rows[parent]}, which has errors"
                else:
                    reason = f"unknown parent station {parent!r}"
                errors.append(RowError(file, number, reason, "parent_id"))
            else:
                parent_tier = final[parent][0]
                expected = PARENT_TIER[row.tier]
                if expected is not None and parent_tier != expected.value:
                    errors.append(
                        RowError(
                            file,
                            number,
                            f"parent station {parent!r} is a {parent_tier} station; a "
                            f"{row.tier.value} station's parent must be a {expected.value} station",
                            "parent_id",
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
                RowError(
                    file,
                    in_file[parent],
                    f"would make station {parent!r} a {parent_tier} station, but its child station "
                    f"{child!r} ({child_tier}) needs a {expected.value} parent",
                    "tier",
                )
            )
    return errors


def _assign(kind: str, obj: Any, row: RegistryRow, now: datetime, *, is_new: bool) -> None:
    for column in EXPORT_COLUMNS[kind]:
        if column == "contacts":
            continue
        setattr(obj, column, _plain(getattr(row, column)))
    if isinstance(row, ResidentRow):
        wanted = [(c.name, c.relation, c.phone, c.priority) for c in row.contacts]
        current = [] if is_new else [(c.name, c.relation, c.phone, c.priority) for c in obj.contacts]
        # Rewriting identical contacts would churn their ids on every re-import.
        if is_new or wanted != current:
            obj.contacts = [Contact(name=n, relation=r, phone=p, priority=pr) for n, r, p, pr in wanted]
    if isinstance(row, DeviceRow) and row.secret is not None:
        obj.secret_hash = hash_secret(row.secret.get_secret_value())
        obj.rekeyed_at = now


async def write_rows(
    session: AsyncSession, kind: str, rows: Sequence[tuple[int, RegistryRow]], *, now: datetime
) -> tuple[int, int]:
    """Upsert already-checked rows in file order; returns (created, updated)."""
    existing = await _load_by_ids(session, kind, (row.id for _, row in rows))
    created = updated = 0
    for _, row in rows:
        obj = existing.get(row.id)
        if obj is None:
            obj = _ORM[kind]()
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
    kind: str,
    rows: Sequence[tuple[int, RegistryRow]],
    *,
    file: str,
    now: datetime,
) -> tuple[int, int]:
    """Check references then write; raises RegistryImportError and writes nothing on any problem."""
    errors = await check_references(session, kind, rows, file)
    if errors:
        raise RegistryImportError(file, errors)
    return await write_rows(session, kind, rows, now=now)


# --------------------------------------------------------------------------- import


def _format_validation(file: str, number: int, exc: ValidationError) -> list[RowError]:
    errors: list[RowError] = []
    for err in exc.errors():
        loc = err.get("loc", ())
        column = str(loc[0]) if loc else None
        path = "".join(f"[{p + 1}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        given = err.get("input")
        if (
            column is not None
            and column != "secret"
            and isinstance(given, str | int | float)
            and len(loc) == 1
        ):
            message = f"{message} (got {given!r})"
        errors.append(RowError(file, number, f"{path.lstrip('.') + ': ' if path else ''}{message}", column))
    return errors


async def _validate_sheet(
    session: AsyncSession, kind: str, sheet: _Sheet, header: list[str], file: str
) -> tuple[list[tuple[int, RegistryRow]], list[RowError], dict[str, int]]:
    model = ROW_MODELS[kind]
    raw_rows: list[tuple[int, dict[str, str]]] = []
    errors: list[RowError] = []
    for number, cells in sheet.rows:
        if not any(cells):
            continue
        if any(cells[len(header) :]):
            errors.append(RowError(file, number, f"more cells than the {len(header)} header columns"))
            continue
        raw_rows.append((number, dict(zip(header, cells, strict=False))))

    ids = [raw.get("id", "") for _, raw in raw_rows]
    existing = await _load_by_ids(session, kind, (i for i in ids if ID_RE.match(i)))
    rows: list[tuple[int, RegistryRow]] = []
    bad_rows: dict[str, int] = {}
    for number, raw in raw_rows:
        stored = existing.get(raw.get("id", ""))
        merged: dict[str, Any] = _values_of(kind, stored) if stored is not None else {}
        merged.update(raw)
        merged = {k: v for k, v in merged.items() if not (isinstance(v, str) and not v.strip())}
        try:
            rows.append((number, model.model_validate(merged)))
        except ValidationError as exc:
            errors += _format_validation(file, number, exc)
            bad_rows.setdefault(raw.get("id", ""), number)
    return rows, errors, bad_rows


async def import_file(
    maker: async_sessionmaker[AsyncSession],
    path: Path,
    kind: str | None = None,
    *,
    now: datetime | None = None,
) -> ImportReport:
    """Import one file in one transaction; raises RegistryImportError listing every problem."""
    path = Path(path)
    kind = kind_of(path, kind)
    file = path.name
    sheet = await asyncio.to_thread(_read_sheet, path)
    header = _check_header(kind, sheet, file)
    now = now or datetime.now(UTC)
    async with session_scope(maker) as session:
        rows, errors, bad_rows = await _validate_sheet(session, kind, sheet, header, file)
        errors += await check_references(session, kind, rows, file, bad_rows=bad_rows)
        if errors:
            raise RegistryImportError(file, sorted(errors, key=lambda e: e.row))
        created, updated = await write_rows(session, kind, rows, now=now)
    return ImportReport(file, kind, "applied", rows=len(rows), created=created, updated=updated)


async def import_files(
    maker: async_sessionmaker[AsyncSession], paths: Iterable[Path], *, now: datetime | None = None
) -> list[ImportReport]:
    """Import several files parents-first (stations, staff, homes, residents, devices).

    Each file is its own transaction, so files before a failing one stay applied; the
    failing file's report carries its errors and later files are reported as skipped.
    """
    planned: list[tuple[Path, str]] = []
    all_paths = [Path(p) for p in paths]
    for path in all_paths:
        try:
            planned.append((path, kind_of(path)))
        except RegistryImportError as exc:
            return [
                ImportReport(p.name, "", "failed", errors=tuple(exc.errors))
                if p == path
                else ImportReport(p.name, "", "skipped")
                for p in all_paths
            ]
    planned.sort(key=lambda item: KINDS.index(item[1]))
    reports: list[ImportReport] = []
    failed = False
    for path, kind in planned:
        if failed:
            reports.append(ImportReport(path.name, kind, "skipped"))
            continue
        try:
            reports.append(await import_file(maker, path, kind, now=now))
        except RegistryImportError as exc:
            reports.append(ImportReport(path.name, kind, "failed", errors=tuple(exc.errors)))
            failed = True
    return reports


# --------------------------------------------------------------------------- export


def _export_cell(column: str, value: Any) -> CellValue:
    if column == "contacts":
        ordered = sorted(value, key=lambda c: c["priority"])
        return "; ".join(f"{c['name']}/{c['relation']}/{c['phone']}" for c in ordered)
    if column == "conditions":
        return encode_conditions(list(value))
    value = _plain(value)
    if value is None or isinstance(value, str | int | float | bool | date):
        return value
    return str(value)


def _csv_text(value: CellValue) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _write_csv(out: Path, columns: Sequence[str], rows: Sequence[Sequence[CellValue]]) -> None:
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_text(v) for v in row])


def _write_xlsx(out: Path, kind: str, columns: Sequence[str], rows: Sequence[Sequence[CellValue]]) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = kind
    ws.append(list(columns))
    for r, row in enumerate(rows, start=2):
        for c, value in enumerate(row, start=1):
            cell = ws.cell(row=r, column=c, value=value)
            if isinstance(value, str) and value.startswith("="):
                # Text that looks like a formula stays text: nothing in a registry is computed.
                cell.data_type = "s"
    ws.freeze_panes = "A2"
    wb.save(out)


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
    model = _ORM[kind]
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
            values = _values_of(kind, obj)
            rows.append([_export_cell(c, values[c]) for c in columns])
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "csv":
        await asyncio.to_thread(_write_csv, tmp, columns, rows)
    else:
        await asyncio.to_thread(_write_xlsx, tmp, kind, columns, rows)
    # Replace in one step so a reader never sees half a file.
    await asyncio.to_thread(os.replace, tmp, out)
    return len(rows)

"""Registry files as files: which kind a file holds, reading CSV (UTF-8) and XLSX sheets
into text cells, writing rows back out, and the problems reported about them.

Nothing here touches the database: ``dispatcher.registry.importing`` checks and applies
what is read, ``dispatcher.registry.export`` writes what is stored. Every problem names
the file, the row number a person sees in Excel or a text editor (header = row 1) and a
reason.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

from dispatcher.registry.reasons import Param, english
from dispatcher.registry.schemas import EXPORT_COLUMNS, IMPORT_COLUMNS

KINDS: Final = ("stations", "staff", "homes", "residents", "devices")
FORMATS: Final = ("csv", "xlsx")
_MAX_LISTED_ERRORS = 20

CellValue = str | int | float | bool | date | None


@dataclass(frozen=True)
class RowError:
    """One problem in a registry file. ``row`` counts the header as 1; 0 means the whole file."""

    file: str
    row: int
    reason: str
    column: str | None = None
    value: str | None = None  # the cell as read (never a secret); None when not one cell
    # what ``reason`` says as a code of dispatcher.registry.reasons and its parameters
    # (the console words it in its own language); "" when only the English text exists.
    # Two errors saying the same are equal: the code is another form of ``reason``.
    code: str = field(default="", compare=False)
    params: dict[str, Param] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def of(
        cls,
        file: str,
        row: int,
        code: str,
        column: str | None = None,
        value: str | None = None,
        /,
        **params: Param,
    ) -> RowError:
        """A problem given by its code: the English reason is the code's sentence."""
        return cls(file, row, english(code, params), column, value, code, params)

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
class Sheet:
    header: list[str]
    rows: list[tuple[int, list[str]]]


# --------------------------------------------------------------------------- file kinds


def kind_of(path: Path, kind: str | None = None) -> str:
    """The registry kind of a file: given explicitly, or the file name (``homes-2023.xlsx``)."""
    if kind is not None:
        if kind not in KINDS:
            raise RegistryImportError(
                path.name,
                [RowError.of(path.name, 0, "unknown_kind", kind=kind, kinds=", ".join(KINDS))],
            )
        return kind
    stem = path.stem.lower()
    for candidate in KINDS:
        if stem == candidate or (stem.startswith(candidate) and stem[len(candidate)] in "-_. "):
            return candidate
    raise RegistryImportError(
        path.name,
        [RowError.of(path.name, 0, "kind_from_name", kinds=", ".join(KINDS))],
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


def _read_csv(path: Path) -> Sheet:
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
        raise RegistryImportError(name, [RowError.of(name, 0, "not_utf8", detail=exc.reason)]) from exc
    except csv.Error as exc:
        raise RegistryImportError(name, [RowError.of(name, 0, "malformed_csv", detail=str(exc))]) from exc
    except OSError as exc:
        raise RegistryImportError(
            name, [RowError.of(name, 0, "cannot_read", detail=str(exc.strerror))]
        ) from exc
    if header is None:
        raise RegistryImportError(name, [RowError.of(name, 1, "empty_file")])
    return Sheet(header, rows)


def _read_xlsx(path: Path) -> Sheet:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    name = path.name
    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise RegistryImportError(name, [RowError.of(name, 0, "not_xlsx", detail=str(exc))]) from exc
    except OSError as exc:
        raise RegistryImportError(
            name, [RowError.of(name, 0, "cannot_read", detail=str(exc.strerror))]
        ) from exc
    try:
        if not wb.worksheets:
            raise RegistryImportError(name, [RowError.of(name, 0, "no_sheet")])
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
        raise RegistryImportError(name, [RowError.of(name, 1, "empty_sheet")])
    return Sheet(header, rows)


def read_sheet(path: Path) -> Sheet:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path)
    raise RegistryImportError(
        path.name,
        [RowError.of(path.name, 0, "unsupported_type", suffix=suffix or "(none)")],
    )


def check_header(kind: str, sheet: Sheet, name: str) -> list[str]:
    header = [h.strip().lower() for h in sheet.header]
    while header and not header[-1]:
        header.pop()
    problems: list[RowError] = []
    if not header or header[0] != "id":
        problems.append(RowError.of(name, 1, "first_column_id", found=header[0] if header else "nothing"))
    allowed = IMPORT_COLUMNS[kind]
    for position, column in enumerate(header, start=1):
        if not column:
            problems.append(RowError.of(name, 1, "unnamed_column", position=position))
        elif column not in allowed:
            known = ", ".join(EXPORT_COLUMNS[kind]) + (", secret" if kind == "devices" else "")
            problems.append(RowError.of(name, 1, "unknown_column", column=column, kind=kind, known=known))
    duplicates = sorted({c for c in header if c and header.count(c) > 1})
    if duplicates:
        problems.append(RowError.of(name, 1, "repeated_columns", columns=", ".join(duplicates)))
    if problems:
        raise RegistryImportError(name, problems)
    return header

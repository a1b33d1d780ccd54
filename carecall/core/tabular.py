"""Tables out: the one CSV writer, the one XLSX writer and the one terminal table.

A table is a list of column names and rows of cell values in that order. The registry
export (dispatcher/registry/export.py) and the oversight downloads (dispatcher/oversight/
export.py) both write through here, so a value looks the same in every file CareCall
writes: CSV holds Python's shortest exact float text, ``true``/``false`` and ISO dates;
XLSX keeps numbers as numbers, and text that looks like a formula stays text.

A terminal table pads by display width, not by characters: a Chinese name such as
``王秀英`` takes six columns in a terminal, not three (``display_width``, ``ljust_display``).
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

__all__ = [
    "MEDIA_TYPES",
    "columns_of",
    "csv_bytes",
    "csv_text",
    "display_width",
    "fit_width",
    "ljust_display",
    "rows_in",
    "text_table",
    "xlsx_bytes",
]

MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
_XLSX_SHEET_NAME_MAX = 31  # Excel refuses longer sheet names


def columns_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Columns in first-seen order across all rows (rows of one table share keys)."""
    cols: dict[str, None] = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, None)
    return list(cols)


def rows_in(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """Dict rows as value rows in ``columns`` order (a missing key is an empty cell)."""
    return [[r.get(c) for c in columns] for r in rows]


def csv_text(value: Any) -> str:
    """One cell as CSV text: empty for None, ``true``/``false``, the shortest exact float,
    ISO dates."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def csv_bytes(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool) -> bytes:
    """UTF-8 CSV with ``\\n`` line ends. ``bom``: start with a byte-order mark, which Excel
    in a Chinese locale needs to read UTF-8 rather than GBK."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([csv_text(v) for v in row])
    return (("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8")


def xlsx_bytes(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, sheet: str) -> bytes:
    """One sheet named ``sheet`` (cut to Excel's 31 characters), the header row frozen."""
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = sheet[:_XLSX_SHEET_NAME_MAX]
    ws.append(list(columns))
    for r, row in enumerate(rows, start=2):
        for c, value in enumerate(row, start=1):
            cell = ws.cell(row=r, column=c, value=value)
            if isinstance(value, str) and value.startswith("="):
                cell.data_type = "s"  # nothing we export is computed: text stays text
    ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- terminal tables


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        # combining marks and format characters (zero-width space and joiner, BOM)
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(s: str) -> int:
    """Columns ``s`` takes in a terminal: wide and full-width characters (Chinese, 全角
    letters) two, combining marks and format characters none, everything else one."""
    return sum(_char_width(ch) for ch in s)


def ljust_display(s: str, width: int) -> str:
    """``s`` padded with spaces on the right to ``width`` display columns (as it is when
    it is already as wide or wider)."""
    return s + " " * max(0, width - display_width(s))


def fit_width(text: str, width: int) -> str:
    """``text`` on one line, cut to at most ``width`` terminal columns (ending in "…" when cut)."""
    text = " ".join(text.split())
    if display_width(text) <= width:
        return text
    out: list[str] = []
    used = 0
    for ch in text:
        w = _char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def text_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, max_widths: Sequence[int | None] = ()
) -> str:
    """A plain-text table aligned by terminal columns (so Chinese lines up). A cell of
    column ``i`` is cut to ``max_widths[i]`` columns when given (None: never cut); the
    last column is left unpadded."""

    def cell(i: int, value: Any) -> str:
        limit = max_widths[i] if i < len(max_widths) else None
        text = " ".join(csv_text(value).split())
        return text if limit is None else fit_width(text, limit)

    cells = [[cell(i, c) for i, c in enumerate(columns)]]
    cells += [[cell(i, v) for i, v in enumerate(row)] for row in rows]
    widths = [max(display_width(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for r in cells:
        padded = [ljust_display(c, w) for c, w in zip(r[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, r[-1]]).rstrip())
    return "\n".join(lines)

"""Tables out: CSV, XLSX and terminal text from the same flat rows.

Every report is a list of flat dicts before it becomes anything else, and each format
here is a faithful rendering of those values (numbers stay numbers in XLSX, CSV writes
Python's shortest exact float text), so the API's JSON, the downloads and ``carecall
report`` cannot disagree about a figure.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["FORMATS", "MEDIA_TYPES", "columns_of", "to_csv", "to_table", "to_xlsx"]

FORMATS = ("json", "csv", "xlsx")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns in first-seen order across all rows (rows of one report share keys)."""
    cols: dict[str, None] = {}
    for r in rows:
        for k in r:
            cols.setdefault(k, None)
    return list(cols)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """UTF-8 with a BOM: Excel in a Chinese locale otherwise reads it as GBK."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = columns_of(rows)
    w.writerow(cols)
    for r in rows:
        w.writerow([_text(r.get(c)) for c in cols])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(rows: Sequence[Mapping[str, Any]], sheet: str = "report") -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = sheet[:31]
    cols = columns_of(rows)
    ws.append(cols)
    for r, row in enumerate(rows, start=2):
        for c, col in enumerate(cols, start=1):
            value = row.get(col)
            cell = ws.cell(row=r, column=c, value=value)
            if isinstance(value, str) and value.startswith("="):
                cell.data_type = "s"  # a report holds no formulas; text stays text
    ws.freeze_panes = "A2"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) < 1e15 else repr(value)
    return str(value)


def to_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain aligned text table for the terminal; ``columns`` picks and orders them.

    Floats print with up to six significant digits (%g); ``--format csv`` or ``json``
    give the exact values.
    """
    cols = list(columns) if columns else columns_of(rows)
    if not rows:
        return "(no rows)"
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)

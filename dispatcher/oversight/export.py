"""Tables out: CSV, XLSX (written by carecall/core/tabular.py) and terminal text from the
same flat rows.

Every report is a list of flat dicts before it becomes anything else, and each format
here is a faithful rendering of those values (numbers stay numbers in XLSX, CSV writes
Python's shortest exact float text), so the API's JSON, the downloads and ``carecall
report`` cannot disagree about a figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from carecall.core.tabular import (
    MEDIA_TYPES,
    columns_of,
    csv_bytes,
    display_width,
    ljust_display,
    rows_in,
    xlsx_bytes,
)
from dispatcher.oversight.text import Lang, column_label

__all__ = ["FORMATS", "MEDIA_TYPES", "columns_of", "headers", "to_csv", "to_table", "to_xlsx"]

FORMATS = ("json", "csv", "xlsx")


def headers(columns: Sequence[str], lang: Lang | None) -> list[str]:
    """The header row: column names as they are (``lang`` None, for scripts) or as
    words in zh-CN or English (text.column_label)."""
    return list(columns) if lang is None else [column_label(c, lang) for c in columns]


def to_csv(rows: Sequence[Mapping[str, Any]], lang: Lang | None = None) -> bytes:
    """UTF-8 with a BOM: Excel in a Chinese locale otherwise reads it as GBK."""
    cols = columns_of(rows)
    return csv_bytes(headers(cols, lang), rows_in(cols, rows), bom=True)


def to_xlsx(rows: Sequence[Mapping[str, Any]], sheet: str = "report", lang: Lang | None = None) -> bytes:
    cols = columns_of(rows)
    return xlsx_bytes(headers(cols, lang), rows_in(cols, rows), sheet=sheet)


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
    # by display width: a Chinese name takes two terminal columns a character
    widths = [max(display_width(c), *(display_width(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(ljust_display(c, w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(ljust_display(v, w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)

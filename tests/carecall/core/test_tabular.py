"""The one CSV/XLSX writer: cell text, the byte-order mark, formula-looking text, sheets."""

from __future__ import annotations

import io
from datetime import date, datetime

from openpyxl import load_workbook

from carecall.core.tabular import columns_of, csv_bytes, csv_text, rows_in, xlsx_bytes


def test_csv_cells_are_exact_and_plain() -> None:
    assert csv_text(None) == ""
    assert csv_text(True) == "true" and csv_text(False) == "false"
    assert csv_text(0.1 + 0.2) == "0.30000000000000004"  # the shortest exact float, not %g
    assert csv_text(7) == "7"
    assert csv_text(date(1940, 3, 1)) == "1940-03-01"
    assert csv_text(datetime(2026, 11, 26, 3, 0)) == "2026-11-26T03:00:00"
    assert csv_text("王秀英") == "王秀英"


def test_csv_bytes_with_and_without_bom() -> None:
    rows = [["h1", "建设路1号, 2楼", 32.5, None], ["h2", 'say "hi"', 1.0, True]]
    plain = csv_bytes(["id", "address", "lat", "x"], rows, bom=False)
    assert plain.decode("utf-8") == (
        'id,address,lat,x\nh1,"建设路1号, 2楼",32.5,\nh2,"say ""hi""",1.0,true\n'
    )
    assert csv_bytes(["id", "address", "lat", "x"], rows, bom=True) == "\ufeff".encode() + plain


def test_xlsx_keeps_numbers_and_formula_text() -> None:
    body = xlsx_bytes(["id", "notes", "lat"], [["h1", "=HYPERLINK(1)", 32.5]], sheet="a" * 40)
    wb = load_workbook(io.BytesIO(body))
    ws = wb.active
    assert ws is not None
    assert ws.title == "a" * 31  # Excel's limit
    assert ws.freeze_panes == "A2"
    assert [tuple(r) for r in ws.iter_rows(values_only=True)] == [
        ("id", "notes", "lat"),
        ("h1", "=HYPERLINK(1)", 32.5),
    ]
    assert ws["B2"].data_type == "s"


def test_dict_rows_become_columns_in_first_seen_order() -> None:
    rows = [{"a": 1, "b": 2}, {"b": 3, "c": 4}]
    cols = columns_of(rows)
    assert cols == ["a", "b", "c"]
    assert rows_in(cols, rows) == [[1, 2, None], [None, 3, 4]]


def test_display_width_counts_wide_characters_twice() -> None:
    from carecall.core.tabular import display_width

    assert display_width("") == 0
    assert display_width("abc") == 3
    assert display_width("王秀英") == 6
    assert display_width("县平台 A1") == 9
    assert display_width("ＡＢ") == 4  # full-width letters
    assert display_width("e\u0301") == 1  # a combining accent takes no column
    assert display_width("ｱ") == 1  # half-width katakana
    assert display_width("a\u200bb\u200d") == 2  # zero-width space and joiner take none


def test_ljust_display_pads_to_columns_not_characters() -> None:
    from carecall.core.tabular import display_width, ljust_display

    assert ljust_display("王", 4) == "王  "
    assert ljust_display("ab", 4) == "ab  "
    assert ljust_display("王秀英", 4) == "王秀英"  # wider already: left as it is
    assert display_width(ljust_display("李四", 9)) == 9


def test_terminal_width_counts_chinese_as_two_columns() -> None:
    from carecall.core.tabular import display_width, fit_width

    assert display_width("abc") == 3
    assert display_width("王秀英") == 6
    assert display_width("ｱ１") == 3  # half-width katakana 1, full-width digit 2
    assert display_width("e\u0301") == 1  # a combining accent takes no column
    assert fit_width("钥匙在邻居王阿姨家", 9) == "钥匙在邻…"
    assert display_width(fit_width("钥匙在邻居王阿姨家", 9)) <= 9
    assert fit_width("short", 9) == "short"
    assert fit_width("two\nlines", 20) == "two lines"


def test_text_table_aligns_mixed_scripts_and_cuts_only_limited_columns() -> None:
    from carecall.core.tabular import display_width, text_table

    table = text_table(
        ("name", "note", "why"),
        [("王秀英", "钥匙在邻居王阿姨家 (302)", "a reason that is never cut at all"), ("Li", None, "x")],
        max_widths=(None, 10, None),
    )
    lines = table.splitlines()
    starts = {
        display_width(line[: line.index(word)])
        for line, word in zip(lines, ("why", "a reason", "x"), strict=True)
    }
    assert len(starts) == 1
    assert "钥匙在邻…" in lines[1] and lines[1].endswith("never cut at all")
    assert lines[2].split() == ["Li", "x"]

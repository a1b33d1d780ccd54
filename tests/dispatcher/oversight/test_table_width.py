"""``carecall report … --format table`` aligns columns holding Chinese names (each
character two terminal columns wide)."""

from __future__ import annotations

from carecall.core.tabular import display_width
from dispatcher.oversight.export import to_table


def test_report_table_aligns_chinese_station_names() -> None:
    rows = [
        {"station": "唐河县县级养老服务中心", "calls": 12, "answer_median_s": 21.5},
        {"station": "city-1", "calls": 3, "answer_median_s": None},
        {"station": "桐寨铺镇", "calls": 140, "answer_median_s": 9.25},
    ]
    lines = to_table(rows).split("\n")
    # every row's "calls" value starts at the header's column, counted in display columns
    col = display_width(lines[0][: lines[0].index("calls")])
    for line, value in zip(lines[2:], ("12", "3", "140"), strict=True):
        assert display_width(line[: line.index(value, len(line.split("  ")[0]))]) == col, lines
    assert display_width(lines[1].split("  ")[0]) == display_width("唐河县县级养老服务中心")

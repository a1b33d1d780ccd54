from __future__ import annotations

from pathlib import Path

from .support import read_xlsx


def test_xlsx_export_cells(tmp_path: Path) -> None:
    """Formula-looking text stays text, so a registry file cannot run anything in Excel."""
    from carecall.core.tabular import xlsx_bytes

    path = tmp_path / "homes.xlsx"
    path.write_bytes(xlsx_bytes(["id", "notes", "lat"], [["h1", "=HYPERLINK(1)", 32.5]], sheet="homes"))
    assert read_xlsx(path) == [("id", "notes", "lat"), ("h1", "=HYPERLINK(1)", 32.5)]

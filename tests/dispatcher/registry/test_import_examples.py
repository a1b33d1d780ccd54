"""docs/import.md and docs/examples/import/: the example of every kind imports as it
stands, shows every column, and the documentation names every column of its kind."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from sqlalchemy import select

from dispatcher.registry.files import KINDS
from dispatcher.registry.importing import import_files
from dispatcher.registry.models import Contact, Home, Resident, Staff
from dispatcher.registry.schemas import IMPORT_COLUMNS

from .support import NOW, Maker

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples" / "import"
DOC = ROOT / "docs" / "import.md"


def test_every_kind_has_an_example_with_every_column() -> None:
    for kind in KINDS:
        with (EXAMPLES / f"{kind}.csv").open(encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh))
        expected = IMPORT_COLUMNS[kind] - {"secret"}
        assert set(header) == expected, kind
        assert header[0] == "id"


def test_the_documentation_lists_every_column_of_every_kind() -> None:
    text = DOC.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    for kind in KINDS:
        section = next((s for s in sections if s.startswith(f"{kind} ")), None)
        assert section is not None, f"no '## {kind} (…)' section"
        documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
        assert documented == set(IMPORT_COLUMNS[kind]), kind
        assert f"examples/import/{kind}.csv" in section


async def test_the_examples_import_together(empty_db: Maker) -> None:
    reports = await import_files(empty_db, sorted(EXAMPLES.glob("*.csv")), now=NOW)
    assert [(r.kind, r.status) for r in reports] == [(k, "applied") for k in KINDS], reports
    assert [r.rows for r in reports] == [5, 4, 3, 4, 5]
    async with empty_db() as s:
        resident = await s.get(Resident, "h0001-r1")
        home = await s.get(Home, "h0001")
        staff = await s.get(Staff, "binhe-dc1-resp1")
        contacts = (
            await s.scalars(
                select(Contact).where(Contact.resident_id == "h0001-r1").order_by(Contact.priority)
            )
        ).all()
    assert resident is not None and home is not None and staff is not None
    assert resident.access_notes == "钥匙在邻居王阿姨家 (302)" and resident.allergies == "青霉素"
    assert resident.phone == "13812345678" and home.phone == "0377-6123 4567"
    assert staff.channels == "voice sms"  # the order given is the order kept
    assert [(c.name, c.channels) for c in contacts] == [("王强", "sms voice"), ("李梅", "")]
    # a second run changes nothing and still succeeds (upsert by id)
    again = await import_files(empty_db, sorted(EXAMPLES.glob("*.csv")), now=NOW)
    assert [(r.status, r.created) for r in again] == [("applied", 0)] * len(KINDS)


async def test_the_examples_export_and_reimport_unchanged(
    empty_db: Maker, second_db: Maker, tmp_path: Path
) -> None:
    from dispatcher.registry.export import export_kind

    from .support import read_csv

    await import_files(empty_db, sorted(EXAMPLES.glob("*.csv")), now=NOW)
    for kind in KINDS:
        await export_kind(empty_db, kind, "xlsx", tmp_path / f"{kind}.xlsx")
    reports = await import_files(second_db, [tmp_path / f"{kind}.xlsx" for kind in KINDS], now=NOW)
    assert [r.status for r in reports] == ["applied"] * len(KINDS)
    for kind in KINDS:
        await export_kind(empty_db, kind, "csv", tmp_path / f"a-{kind}.csv")
        await export_kind(second_db, kind, "csv", tmp_path / f"b-{kind}.csv")
        assert read_csv(tmp_path / f"b-{kind}.csv") == read_csv(tmp_path / f"a-{kind}.csv"), kind
    residents = (tmp_path / "a-residents.csv").read_text(encoding="utf-8")
    assert "王强/儿子/13912345678/sms voice; 李梅/女儿/+86 137 1234 5678" in residents
    assert "钥匙在邻居王阿姨家 (302)" in residents

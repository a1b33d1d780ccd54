from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from sqlalchemy import select

from device_gateway.models import Device
from dispatcher.registry.export import export_kind
from dispatcher.registry.files import KINDS
from dispatcher.registry.importing import import_file, import_files
from dispatcher.registry.models import Station

from .support import Maker, counts, read_csv, write


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
async def test_round_trip(
    demo_db: tuple[Maker, dict[str, str]],
    second_db: Maker,
    tmp_path: Path,
    fmt: Literal["csv", "xlsx"],
) -> None:
    source, _ = demo_db
    files = tmp_path / "files"
    files.mkdir()
    written = {kind: await export_kind(source, kind, fmt, files / f"{kind}.{fmt}") for kind in KINDS}
    assert written["stations"] == 85 and written["homes"] == 210

    reports = await import_files(second_db, [files / f"{kind}.{fmt}" for kind in reversed(KINDS)])
    assert [(r.kind, r.status, r.created) for r in reports] == [(k, "applied", written[k]) for k in KINDS]

    # Compare both databases through the (cheap, exact) CSV export.
    for kind in KINDS:
        await export_kind(source, kind, "csv", tmp_path / f"a-{kind}.csv")
        await export_kind(second_db, kind, "csv", tmp_path / f"b-{kind}.csv")
        assert read_csv(tmp_path / f"b-{kind}.csv") == read_csv(tmp_path / f"a-{kind}.csv"), kind
    assert await counts(second_db) == {**await counts(source), "devices_keyed": 0}


async def test_export_has_no_secrets_and_reimport_keeps_hashes(
    demo_db: tuple[Maker, dict[str, str]], tmp_path: Path
) -> None:
    maker, _ = demo_db
    out = tmp_path / "devices.csv"
    await export_kind(maker, "devices", "csv", out)
    rows = read_csv(out)
    assert rows[0] == ["id", "home_id", "kind", "model", "heartbeat_s", "enabled"]
    text = out.read_text(encoding="utf-8")
    assert "$7$" not in text and "secret" not in text

    async with maker() as session:
        before = {d.id: d.secret_hash for d in (await session.scalars(select(Device))).all()}
    report = await import_file(maker, out)
    assert (report.created, report.updated) == (0, len(before))
    async with maker() as session:
        after = {d.id: d.secret_hash for d in (await session.scalars(select(Device))).all()}
    assert after == before


async def test_export_orders_stations_parents_first(empty_db: Maker, tmp_path: Path) -> None:
    # Ids sort children before parents here; export must still list parents first.
    text = (
        "id,name,kind,parent_id,lat,lon\n"
        "zz,县中心,county_centre,,32.6,112.8\n"
        "aa,街道,street_centre,zz,32.6,112.8\n"
    )
    await import_file(empty_db, write(tmp_path / "stations.csv", text))
    out = tmp_path / "out" / "stations.csv"
    out.parent.mkdir()
    await export_kind(empty_db, "stations", "csv", out)
    assert [row[0] for row in read_csv(out)] == ["id", "zz", "aa"]
    async with empty_db() as session:
        assert (await session.get(Station, "aa")) is not None

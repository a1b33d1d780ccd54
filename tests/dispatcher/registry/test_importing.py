from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from openpyxl import Workbook
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from device_gateway.models import Device
from dispatcher.registry.files import RegistryImportError, RowError
from dispatcher.registry.importing import import_file, import_files
from dispatcher.registry.models import Resident

from .support import Maker, counts, write

STATIONS_CSV = """id,name,tier,kind,parent_id,lat,lon,area
county,唐河县县级养老服务中心,county,county_centre,,32.681,112.838,urban
binhe,滨河街道综合养老服务中心,street,street_centre,county,32.666,112.831,urban
binhe-dc1,建设社区日间照料中心,community,day_care_centre,binhe,32.67,112.83,urban
"""
HOMES_CSV = """id,station_id,address,lat,lon
h1,binhe-dc1,唐河县滨河街道建设路12号,32.671,112.832
"""
RESIDENTS_HEADER = "id,home_id,name,sex,birth_date,capacity_level,living_alone,conditions,contacts\n"


async def base_registry(maker: Maker, tmp_path: Path) -> None:
    await import_file(maker, write(tmp_path / "stations.csv", STATIONS_CSV, bom=True))
    await import_file(maker, write(tmp_path / "homes.csv", HOMES_CSV))


async def test_residents_with_contacts_and_partial_update(empty_db: Maker, tmp_path: Path) -> None:
    await base_registry(empty_db, tmp_path)
    path = write(
        tmp_path / "residents.csv",
        RESIDENTS_HEADER + "r1,h1,王秀英,F,1940-03-01,3,true,高血压;糖尿病,"
        "王强/儿子/13812345678; 李丽/邻居/13912345678\n",
    )
    report = await import_file(empty_db, path)
    assert (report.rows, report.created) == (1, 1)

    # Columns left out keep their values; a new contacts cell replaces the list.
    update = write(
        tmp_path / "residents-update.csv",
        "id,capacity_level,contacts\nr1,4,张伟/侄子/13700000000\n",
    )
    assert (await import_file(empty_db, update)).updated == 1
    async with empty_db() as session:
        stmt = select(Resident).where(Resident.id == "r1").options(selectinload(Resident.contacts))
        resident = (await session.scalars(stmt)).one()
        assert resident.name == "王秀英" and resident.capacity_level == 4
        assert resident.conditions == ["高血压", "糖尿病"]
        assert [(c.name, c.priority) for c in resident.contacts] == [("张伟", 1)]


async def test_bad_rows_are_reported_and_nothing_is_written(empty_db: Maker, tmp_path: Path) -> None:
    await base_registry(empty_db, tmp_path)
    before = await counts(empty_db)
    path = write(
        tmp_path / "residents.csv",
        RESIDENTS_HEADER
        + "r1,h1,王秀英,F,1940-03-01,2,true,,王强/儿子/13812345678\n"
        + "r2,h1,李桂兰,F,1941-05-02,7,false,,\n"
        + "r3,h9,张德胜,M,1938-01-01,1,false,,\n",
    )
    with pytest.raises(RegistryImportError) as info:
        await import_file(empty_db, path)
    errors = info.value.errors
    assert [(e.file, e.row, e.column) for e in errors] == [
        ("residents.csv", 3, "capacity_level"),
        ("residents.csv", 4, "home_id"),
    ]
    assert (errors[0].reason, errors[0].value) == ("must be at most 4", "7")
    assert "unknown home 'h9'" in errors[1].reason
    assert "residents.csv:3: capacity_level:" in str(info.value)
    assert await counts(empty_db) == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            STATIONS_CSV + "x1,某站,community,day_care_centre,nowhere,32.6,112.8,urban\n",
            RowError("stations.csv", 5, "unknown parent station 'nowhere'", "parent_id", "nowhere"),
        ),
        (
            "id,name,kind,parent_id,lat,lon\n"
            "st,街道中心,street_centre,cty,32.6,112.8\n"
            "cty,县中心,county_centre,,32.6,112.8\n",
            RowError(
                "stations.csv",
                2,
                "parent station 'cty' comes later in this file (row 3); list parent stations first",
                "parent_id",
                "cty",
            ),
        ),
        (
            STATIONS_CSV + "x2,某站,community,home_care_point,county,32.6,112.8,urban\n",
            RowError(
                "stations.csv",
                5,
                "parent station 'county' is a county station; "
                "a community station's parent must be a street station",
                "parent_id",
                "county",
            ),
        ),
    ],
)
async def test_station_reference_errors(
    empty_db: Maker, tmp_path: Path, text: str, expected: RowError
) -> None:
    with pytest.raises(RegistryImportError) as info:
        await import_file(empty_db, write(tmp_path / "stations.csv", text))
    assert info.value.errors == [expected]
    assert (await counts(empty_db))["stations"] == 0


async def test_tier_change_may_not_strand_children(empty_db: Maker, tmp_path: Path) -> None:
    await base_registry(empty_db, tmp_path)
    path = write(tmp_path / "stations-fix.csv", "id,kind,tier\nbinhe,day_care_centre,\n")
    with pytest.raises(RegistryImportError, match="child station 'binhe-dc1'"):
        await import_file(empty_db, path)


async def test_bad_device_id_and_header_problems(empty_db: Maker, tmp_path: Path) -> None:
    await base_registry(empty_db, tmp_path)
    devices = write(
        tmp_path / "devices.csv",
        "id,home_id,kind\nh1-hub,h1,hub\nh1 radar!,h1,radar\nh1-hub,h1,hub\n",
    )
    with pytest.raises(RegistryImportError) as info:
        await import_file(empty_db, devices)
    assert [(e.row, e.column) for e in info.value.errors] == [(3, "id"), (4, "id")]
    assert info.value.errors[0].reason == "an id is 1 to 64 letters, digits, _ or -"
    assert (info.value.errors[1].reason, info.value.errors[1].value) == (
        "duplicate id (also on row 2)",
        "h1-hub",
    )
    assert (await counts(empty_db))["devices"] == 0

    with pytest.raises(RegistryImportError, match="unknown column 'colour'"):
        await import_file(empty_db, write(tmp_path / "devices.csv", "id,home_id,kind,colour\n"))
    with pytest.raises(RegistryImportError, match="first column must be 'id'"):
        await import_file(empty_db, write(tmp_path / "devices.csv", "home_id,id,kind\n"))
    with pytest.raises(RegistryImportError, match="cannot tell the kind"):
        await import_file(empty_db, write(tmp_path / "beds.csv", "id\n"))


async def test_device_import_with_factory_secret(empty_db: Maker, tmp_path: Path) -> None:
    from device_gateway.credentials import verify_secret

    await base_registry(empty_db, tmp_path)
    secret = "factory-secret-0123456789"
    path = write(
        tmp_path / "devices.csv",
        f"id,home_id,kind,secret\nh1-hub,h1,hub,{secret}\nh1-door,h1,door,\n",
    )
    await import_file(empty_db, path)
    async with empty_db() as session:
        hub = await session.get(Device, "h1-hub")
        door = await session.get(Device, "h1-door")
    assert hub is not None and door is not None
    assert verify_secret(secret, hub.secret_hash)
    assert door.secret_hash is None and door.heartbeat_s == 4 * 3600


async def test_xlsx_with_typed_cells(empty_db: Maker, tmp_path: Path) -> None:
    await base_registry(empty_db, tmp_path)
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["id", "home_id", "name", "sex", "birth_date", "capacity_level", "living_alone", "contacts"])
    ws.append(["r1", "h1", "王秀英", "女", date(1940, 3, 1), 2, True, "王强/儿子/13812345678"])
    ws.append([None] * 8)  # blank rows are skipped but still counted
    ws.append([7, "h1", "李桂兰", "F", date(1941, 5, 2), 2.0, False, None])
    path = tmp_path / "residents.xlsx"
    wb.save(path)
    report = await import_file(empty_db, path)
    assert report.created == 2
    async with empty_db() as session:
        numeric = await session.get(Resident, "7")
    assert numeric is not None and numeric.capacity_level == 2

    ws.append(["r9", "h1", "张三", "M", "not a date", 1, False, None])
    wb.save(path)
    with pytest.raises(RegistryImportError) as info:
        await import_file(empty_db, path)
    assert [(e.row, e.column) for e in info.value.errors] == [(5, "birth_date")]


async def test_import_files_is_all_or_nothing_and_stops_at_first_failure(
    empty_db: Maker, tmp_path: Path
) -> None:
    stations = write(tmp_path / "stations.csv", STATIONS_CSV)
    homes = write(tmp_path / "homes.csv", "id,station_id,address,lat,lon\nh1,nowhere,某地,32.6,112.8\n")
    devices = write(tmp_path / "devices.csv", "id,home_id,kind\nh1-hub,h1,hub\n")
    reports = await import_files(empty_db, [devices, homes, stations])
    assert [(r.file, r.status) for r in reports] == [
        ("stations.csv", "checked"),
        ("homes.csv", "failed"),
        ("devices.csv", "skipped"),
    ]
    assert reports[1].errors[0].reason.startswith("unknown station 'nowhere'")
    assert reports[0].summary() == "stations.csv: stations, 3 rows valid, not written (another file failed)"
    # the valid stations file was rolled back with the failing homes file
    assert (await counts(empty_db))["stations"] == 0

"""``carecall import``, ``devices issue --all-new`` and ``broker-config`` as an installer
runs them: exit codes, what goes to stdout and stderr, and the files they write."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from carecall.core.db import make_engine, make_sessionmaker
from carecall.core.tabular import display_width
from carecall.shell.cli import app
from device_gateway.credentials import verify_secret
from device_gateway.models import Device
from dispatcher.registry.models import Home, Station

STATIONS = (
    "id,name,kind,parent_id,lat,lon\n"
    "cty,唐河县中心,county_centre,,32.68,112.83\n"
    "st1,滨河街道中心,street_centre,cty,32.69,112.84\n"
    "cs1,滨河社区站,community_station,st1,32.70,112.85\n"
)
HOMES = "id,station_id,address,lat,lon,phone\nh1,cs1,滨河路1号,32.7,112.85,0377-6123 4567\n"
DEVICES = "id,home_id,kind\nh1-hub,h1,hub\nh1-btn,h1,button\n"


@pytest.fixture
def cli(db_url: str) -> CliRunner:
    return CliRunner(env={"CARECALL_DATABASE_URL": db_url, "CARECALL_LOG_LEVEL": "WARNING", "COLUMNS": "80"})


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def count(db_url: str, model: type) -> int:
    async def go() -> int:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s:
                return int(await s.scalar(select(func.count()).select_from(model)) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def hashes(db_url: str) -> dict[str, str | None]:
    async def go() -> dict[str, str | None]:
        engine = make_engine(db_url)
        try:
            async with make_sessionmaker(engine)() as s:
                return {i: h for i, h in (await s.execute(select(Device.id, Device.secret_hash))).all()}
        finally:
            await engine.dispose()

    return asyncio.run(go())


def registry(cli: CliRunner, tmp_path: Path) -> None:
    files = [write(tmp_path / n, t) for n, t in (("stations.csv", STATIONS), ("homes.csv", HOMES))]
    files.append(write(tmp_path / "devices.csv", DEVICES))
    result = cli.invoke(app, ["import", *map(str, files)])
    assert result.exit_code == 0, result.output


def test_import_refuses_a_bad_row_with_exit_1_an_aligned_table_and_nothing_written(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    stations = write(tmp_path / "stations.csv", STATIONS)
    homes = write(
        tmp_path / "homes.csv",
        "id,station_id,address,lat,lon,phone\n"
        "h1,cs1,滨河路1号,32.7,112.85,电话是六一二三四五六七八九零一二三四五六七八九\n"
        "h2,cs1,滨河路2号,north,112.85,\n",
    )
    result = cli.invoke(app, ["import", str(stations), str(homes)])
    assert result.exit_code == 1
    assert "stations.csv: stations, 3 rows valid, not written (another file failed)" in result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    header, first, second = lines[0], lines[1], lines[2]
    assert header.split() == ["file", "row", "column", "value", "reason"]
    # the reason column starts at the same terminal column on every line, Chinese or not
    starts = {
        display_width(ln[: ln.index(word)])
        for ln, word in ((header, "reason"), (first, "a phone"), (second, "not a number"))
    }
    assert len(starts) == 1, lines
    assert first.split()[:3] == ["homes.csv", "2", "phone"] and "…" in first  # value cut
    assert "a phone number is digits" in first and "ValidationError" not in result.stderr
    assert second.split()[:4] == ["homes.csv", "3", "lat", "north"]
    assert result.stderr.count("north") == 1  # the value once, not twice
    assert "nothing was written" in lines[-1]
    assert count(db_url, Station) == 0 and count(db_url, Home) == 0


def test_import_applies_good_files_and_exits_0(cli: CliRunner, db_url: str, tmp_path: Path) -> None:
    registry(cli, tmp_path)
    assert count(db_url, Station) == 3 and count(db_url, Home) == 1 and count(db_url, Device) == 2


def test_devices_issue_all_new_writes_a_private_new_file_and_never_prints_secrets(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    registry(cli, tmp_path)
    keyed = cli.invoke(app, ["devices", "issue", "h1-hub", "--home", "h1", "--json"])
    assert keyed.exit_code == 0, keyed.output
    hub_hash = hashes(db_url)["h1-hub"]
    out = tmp_path / "new-secrets.json"
    result = cli.invoke(app, ["devices", "issue", "--all-new", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 device issued" in result.stdout
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    secrets = json.loads(out.read_text(encoding="utf-8"))
    assert list(secrets) == ["h1-btn"]  # the hub had a secret and keeps it
    stored = hashes(db_url)
    assert stored["h1-hub"] == hub_hash
    assert verify_secret(secrets["h1-btn"], stored["h1-btn"] or "")
    assert secrets["h1-btn"] not in result.output


def test_devices_issue_all_new_refuses_an_existing_file_and_issues_nothing(
    cli: CliRunner, db_url: str, tmp_path: Path
) -> None:
    registry(cli, tmp_path)
    out = write(tmp_path / "secrets.json", "keep me")
    result = cli.invoke(app, ["devices", "issue", "--all-new", "--out", str(out)])
    assert result.exit_code != 0 and "never overwritten" in result.stderr
    assert out.read_text(encoding="utf-8") == "keep me"
    assert set(hashes(db_url).values()) == {None}
    mixed = cli.invoke(app, ["devices", "issue", "h1-hub", "--all-new", "--out", str(tmp_path / "x.json")])
    assert mixed.exit_code != 0 and "--all-new takes no device id" in mixed.stderr
    assert not (tmp_path / "x.json").exists()


def test_broker_config_names_each_device_left_out_and_why(cli: CliRunner, tmp_path: Path) -> None:
    registry(cli, tmp_path)
    assert cli.invoke(app, ["devices", "issue", "h1-hub", "--home", "h1"]).exit_code == 0
    result = cli.invoke(
        app,
        [
            *("broker-config", "--out", str(tmp_path / "broker"), "--plugin", "/usr/lib/dynsec.so"),
            *("--platform-password", "pw-platform-123456", "--admin-password", "pw-admin-1234567"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "left out h1-btn: no secret issued yet" in result.stderr
    assert "h1-hub" not in result.stderr
    assert "1 enabled device left out" in result.stderr
    assert "1 devices" in result.stdout and "1 left out" in result.stdout


@pytest.mark.parametrize("command", [["import"], ["devices", "issue"], ["broker-config"]])
def test_help_fits_80_columns(cli: CliRunner, command: list[str]) -> None:
    result = cli.invoke(app, [*command, "--help"], terminal_width=80)
    assert result.exit_code == 0
    assert max(display_width(ln) for ln in result.stdout.splitlines()) <= 80

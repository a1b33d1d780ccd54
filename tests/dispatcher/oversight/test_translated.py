"""Reports people read: CSV/XLSX headers and the monthly report in zh-CN and English,
durations as words, local readable times, codes as words, stations by name, and the
scope named for what it is (a street supervisor's report names the street)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from dispatcher.oversight.text import column_label
from dispatcher.registry.models import Station
from tests.dispatcher.oversight.conftest import NOW, World
from tests.dispatcher.oversight.test_reports import DAY, cli, client_for


async def _name(w: World, station_id: str) -> str:
    async with w.maker() as s:
        return str((await s.scalars(select(Station.name).where(Station.id == station_id))).one())


async def test_download_headers_in_both_languages(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"by": "type", "from": DAY, "to": DAY}
    async with await client_for(world, "sup-county") as c:
        rows = (await c.get("/api/v1/reports/aggregates", params=params)).json()["rows"]
        raw = (await c.get("/api/v1/reports/aggregates", params={**params, "format": "csv"})).content
        zh = (
            await c.get("/api/v1/reports/aggregates", params={**params, "format": "csv", "lang": "zh-CN"})
        ).content
        en_x = (
            await c.get("/api/v1/reports/aggregates", params={**params, "format": "xlsx", "lang": "en"})
        ).content
        bad = await c.get("/api/v1/reports/aggregates", params={**params, "format": "csv", "lang": "fr"})
    keys = list(rows[0])
    raw_lines = raw.decode("utf-8").lstrip("\ufeff").splitlines()
    zh_lines = zh.decode("utf-8").lstrip("\ufeff").splitlines()
    assert raw_lines[0].split(",") == keys  # scripts keep the column names
    assert zh_lines[0].split(",") == [column_label(k, "zh-CN") for k in keys]
    assert "接听中位数（秒）" in zh_lines[0] and "answer_median_s" not in zh_lines[0]
    assert zh_lines[1:] == raw_lines[1:]  # only the header changes
    ws = load_workbook(io.BytesIO(en_x)).active
    assert ws is not None
    header = next(ws.iter_rows(values_only=True))
    assert list(header) == [column_label(k, "en") for k in keys] and "answer median (s)" in header
    assert bad.status_code == 422 and "zh-CN" in bad.text
    # the CLI writes the same bytes with --lang
    monkeypatch.setenv("CARECALL_DATABASE_URL", world.url)
    base = [
        "aggregates",
        "--by",
        "type",
        "--from",
        DAY,
        "--to",
        DAY,
        "--as-of",
        NOW.strftime("%Y-%m-%dT%H:%M:%S"),
    ]
    res = await cli(*base, "--format", "csv", "--lang", "zh-CN")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == zh_lines
    assert (await cli(*base, "--format", "csv", "--lang", "klingon")).exit_code == 2


async def test_monthly_report_is_translated_and_names_the_street(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    street = await _name(world, "st1")
    county = await _name(world, "county")
    community = await _name(world, "cm1")
    async with await client_for(world, "sup-st1") as c:
        zh = (await c.get("/api/v1/reports/monthly", params={"month": "2026-11", "lang": "zh-CN"})).text
        en = (await c.get("/api/v1/reports/monthly", params={"month": "2026-11", "lang": "en"})).text
        accept = await c.get(
            "/api/v1/reports/monthly",
            params={"month": "2026-11"},
            headers={"Accept-Language": "en-GB,en;q=0.8"},
        )
        bad = await c.get("/api/v1/reports/monthly", params={"month": "2026-11", "lang": "xx"})
    # st1's calls (h1): answers 10 45 60 61 200 → median 60 s; calls 2 and 5 to review
    # (call 2: answered in 45 s, on scene after 1000 s; call 5: answered in 200 s)
    assert "月度监管报告" in zh and "复核清单" in zh and "Review list" not in zh
    assert "<b>1分</b>" in zh and "一键呼叫" in zh and "无法入户" in zh and "升级至县中心" in zh
    assert "<td>45秒</td><td>16分40秒</td>" in zh and "<td>3分20秒</td>" in zh
    assert "接听用时</th>" in zh and "（秒）</th><th>到场" not in zh
    assert "2026年11月26日 12:00" in zh  # call 2 started 04:00 UTC = 12:00 in Shanghai
    assert "T03:00" not in zh and "+08:00" not in zh  # no ISO timestamps
    assert f"<p>{street} ·" in zh and "全县" not in zh and county not in zh.split("<h1>")[1].split("</p>")[0]
    assert community in zh  # stations by name in the review list and the by-station table
    assert "monthly oversight report" in en and "Review list (2)" in en and "<b>1 min</b>" in en
    assert "<td>45 s</td><td>16 min 40 s</td>" in en
    assert "one-key call" in en and "2026-11-26 12:00" in en and '<html lang="en">' in en
    assert "whole county" not in en and f"<p>{street} ·" in en
    assert "monthly oversight report" in accept.text
    assert bad.status_code == 422
    # the county supervisor's report is the whole county's
    async with await client_for(world, "sup-county") as c:
        whole = (await c.get("/api/v1/reports/monthly", params={"month": "2026-11", "lang": "zh-CN"})).text
    assert "<p>全县 ·" in whole
    # the CLI: --lang en|zh-CN
    monkeypatch.setenv("CARECALL_DATABASE_URL", world.url)
    out = tmp_path / "m.html"
    res = await cli("monthly", "--month", "2026-11", "--out", str(out), "--lang", "en")
    assert res.exit_code == 0, res.output
    assert "monthly oversight report" in out.read_text(encoding="utf-8")
    res = await cli("monthly", "--month", "2026-11", "--out", str(out))
    assert res.exit_code == 0 and "月度监管报告" in out.read_text(encoding="utf-8")
    assert (await cli("monthly", "--month", "2026-11", "--out", str(out), "--lang", "de")).exit_code == 2

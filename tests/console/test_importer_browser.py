"""The console's registry import (importer.js) in a real browser against ``carecall demo``:
an admin picks a file, a bad one shows every problem and writes nothing, a good one is
counted; operators do not get the panel."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.conftest import DemoServer
from tests.console.test_browser import signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BAD = (
    "id,station_id,address,lat,lon,phone\n"
    "imp-h1,{station},建设路1号,32.69,112.85,0377-6123 4567\n"
    "imp-h2,{station},建设路2号,32.69,112.85,打电话给我\n"
)
GOOD = "id,station_id,address,lat,lon,phone\nimp-h1,{station},建设路1号,32.69,112.85,0377-6123 4567\n"


async def send(page: Any, name: str, text: str) -> None:
    await page.set_input_files(
        "#importer-file", files=[{"name": name, "mimeType": "text/csv", "buffer": text.encode("utf-8")}]
    )
    await page.click("#importer-form button[type=submit]")


async def test_admin_imports_a_file_and_sees_each_problem(browser: Any, demo: DemoServer) -> None:
    station = str(demo.query("select id from stations where tier = 'community' order by id limit 1")[0][0])
    page = await signed_in(browser, demo, "admin", "admin-password-1")
    await page.goto(f"{demo.url}/#/admin")
    await page.wait_for_selector("#importer-form")
    await send(page, "homes.csv", BAD.format(station=station))
    await page.wait_for_selector("table.import-errors tbody tr")
    cells = await page.locator("table.import-errors tbody tr td").all_inner_texts()
    assert cells[:4] == ["homes.csv", "3", "phone", "打电话给我"]
    assert cells[4].startswith("电话号码只能包含数字")  # the reason in the console's language
    assert "没有写入任何数据" in await page.inner_text("#importer-result")
    assert demo.query("select count(*) from homes where id like 'imp-%'") == [(0,)]

    await send(page, "homes.csv", GOOD.format(station=station))
    await page.wait_for_function(
        "() => document.querySelector('#importer-result').textContent.includes('新增 1')"
    )
    assert demo.query("select phone from homes where id = 'imp-h1'") == [("0377-6123 4567",)]
    await page.context.close()


async def test_operators_get_no_import_panel(browser: Any, demo: DemoServer) -> None:
    station = str(demo.query("select id from stations where tier = 'community' order by id limit 1")[0][0])
    demo.create_user("imp-op", station)
    page = await signed_in(browser, demo, "imp-op")
    await page.goto(f"{demo.url}/#/admin")
    await page.wait_for_selector("#staff-rows")
    assert await page.locator("#importer-form").count() == 0
    await page.context.close()

"""The importer's problem table speaks the console's language: the server sends each
problem as a code and parameters next to its English sentence (what ``carecall import``
prints), and the Chinese console words it in Chinese, the English one as the command
line does."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.console.conftest import DemoServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADMIN = ("admin", "admin-password-1")  # CARECALL_ADMIN_PASSWORD of the demo fixture
BAD = (
    "id,station_id,address,lat,lon,phone\n"
    "rs-h1,{station},建设路1号,32.69,112.85,\n"
    "rs-h1,{station},建设路2号,32.69,112.85,\n"
    "rs-h3,{station},建设路3号,32.69,112.85,打电话给我\n"
    "rs-h4,{station},建设路4号,95,112.85,\n"
    "rs-h5,no-such-station,建设路5号,32.69,112.85,\n"
)
RESIDENTS = (
    "id,home_id,name,sex,birth_date,capacity_level,contacts\n"
    "rs-r1,{home},王秀英,F,1940-03-01,2,王强/儿子/13812345678/pager\n"
    "rs-r2,{home},李桂兰,F,1850-03-01,2,\n"
)
HAN = re.compile(r"[\u4e00-\u9fff]")


async def problems(
    browser: Any, demo: DemoServer, lang: str, name: str = "homes.csv", text: str = BAD
) -> list[list[str]]:
    ctx = await browser.new_context(viewport={"width": 1366, "height": 768}, locale=lang)
    await ctx.add_init_script(f"localStorage.setItem('carecall.lang', '{lang}')")
    page = await ctx.new_page()
    await page.goto(f"{demo.url}/")
    await page.fill("#login-username", ADMIN[0])
    await page.fill("#login-password", ADMIN[1])
    await page.click("#login-submit")
    await page.wait_for_selector("#app-view:not([hidden])")
    await page.goto(f"{demo.url}/#/admin")
    await page.wait_for_selector("#importer-form")
    station = str(demo.query("select id from stations where tier = 'community' order by id limit 1")[0][0])
    await page.set_input_files(
        "#importer-file",
        files=[{"name": name, "mimeType": "text/csv", "buffer": text.format(station=station).encode()}],
    )
    await page.click("#importer-form button[type=submit]")
    await page.wait_for_selector("table.import-errors tbody tr")
    rows = await page.locator("table.import-errors tbody tr").evaluate_all(
        "trs => trs.map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))"
    )
    missing = await page.evaluate("() => [...window.carecallI18nMissing]")
    assert missing == [], missing
    await ctx.close()
    return [list(r) for r in rows]


async def test_the_chinese_console_gives_each_reason_in_chinese(browser: Any, demo: DemoServer) -> None:
    rows = await problems(browser, demo, "zh-CN")
    reasons = {(r[1], r[2]): r[4] for r in rows}
    assert reasons[("4", "phone")].startswith("电话号码只能包含数字"), reasons
    assert reasons[("5", "lat")] == "不能大于 90", reasons
    assert reasons[("3", "id")] == "编号重复（第 2 行也有）", reasons
    assert reasons[("6", "station_id")] == "找不到服务站“no-such-station”（请先导入服务站）", reasons
    assert all(HAN.search(reason) for reason in reasons.values()), reasons
    assert not any(
        re.search("[a-z]{5}", reason.replace("no-such-station", "")) for reason in reasons.values()
    )


async def test_the_english_console_reads_as_the_command_line(browser: Any, demo: DemoServer) -> None:
    rows = await problems(browser, demo, "en")
    reasons = {(r[1], r[2]): r[4] for r in rows}
    assert reasons[("4", "phone")] == "a phone number is digits, an optional leading +, spaces or dashes"
    assert reasons[("5", "lat")] == "must be at most 90"
    assert reasons[("3", "id")] == "duplicate id (also on row 2)"
    assert reasons[("6", "station_id")] == "unknown station 'no-such-station' (import stations first)"
    assert not any(HAN.search(reason) for reason in reasons.values()), reasons


async def test_a_contact_s_problem_names_the_contact_in_chinese(browser: Any, demo: DemoServer) -> None:
    home = str(demo.query("select id from homes order by id limit 1")[0][0])
    rows = await problems(browser, demo, "zh-CN", "residents.csv", RESIDENTS.replace("{home}", home))
    reasons = {(r[1], r[2]): r[4] for r in rows}
    assert reasons[("2", "contacts")] == (
        "联系人 1 channels：未知的通知渠道“pager”；可用的渠道：sms, voice, robot, email, app"
    ), reasons
    assert reasons[("3", "birth_date")] == "出生日期 1850-03-01 不合理", reasons

"""The supervisors' pages in a real browser against a real ``carecall demo``: the dashboard's
charts and headline figures (equal to ``/api/v1/reports/summary``), the review list, device
health, big-screen mode, and a street supervisor who never sees another street's call."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiomqtt
import httpx
import pytest

from tests.console.conftest import PASSWORD, DemoServer
from tests.console.test_browser import pick_home, signed_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def alarm(demo: DemoServer, device_id: str, kind: str = "sos") -> None:
    """One alarm from a demo device over real MQTT, with the device's secret."""
    secret = json.loads((demo.workdir / "carecall-demo-secrets.json").read_text())[device_id]
    async with aiomqtt.Client(
        "127.0.0.1", demo.mqtt_port, username=device_id, password=secret, identifier=device_id
    ) as client:
        body = {"id": f"sv-{device_id}-{time.time_ns()}", "ts": int(time.time() * 1000), "type": kind}
        await client.publish(f"carecall/v1/devices/{device_id}/events", json.dumps(body), qos=1)


def token(demo: DemoServer, username: str = "county-op", password: str = "carecall-demo") -> str:
    r = httpx.post(f"{demo.url}/api/v1/auth/token", data={"username": username, "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


async def seed_calls(demo: DemoServer, homes: int = 6) -> list[int]:
    """A handful of calls to draw: SOS from call buttons and falls from watches in several
    streets; the county operator acknowledges, dispatches and resolves some of them."""
    buttons = [str(r[0]) for r in demo.query("select id from devices where kind = 'button' order by id")]
    watches = [str(r[0]) for r in demo.query("select id from devices where kind = 'watch' order by id")]
    sources = [(d, "sos") for d in buttons[::6][:homes]] + [
        (d, "fall") for d in watches[::9][: max(1, homes // 2)]
    ]
    before = {int(str(r[0])) for r in demo.query("select id from calls")}
    for device, kind in sources:
        await alarm(demo, device, kind)
    deadline = time.monotonic() + 10
    ids: list[int] = []
    while time.monotonic() < deadline:
        ids = sorted(
            int(str(r[0])) for r in demo.query("select id from calls") if int(str(r[0])) not in before
        )
        if len(ids) >= len(sources):
            break
        await asyncio.sleep(0.1)
    headers = {"Authorization": f"Bearer {token(demo)}"}
    async with httpx.AsyncClient(base_url=demo.url, headers=headers) as http:
        for n, call_id in enumerate(ids):
            if n % 4 == 3:
                continue  # left open: unanswered so far
            await http.post(f"/api/v1/calls/{call_id}/acknowledge")
            if n % 4 == 2:
                continue
            ctx = (await http.get(f"/api/v1/console/calls/{call_id}/context")).json()
            free = [r["staff_id"] for r in ctx["responders"] if r["state"] == "free"][:1]
            if free:
                await http.post(f"/api/v1/calls/{call_id}/dispatch", json={"staff_ids": free})
                await http.post(f"/api/v1/calls/{call_id}/arrive")
            outcome = "no_access" if n == 4 else "helped_on_site"
            await http.post(f"/api/v1/calls/{call_id}/resolve", json={"outcome": outcome})
    return ids


async def wait_calls(demo: DemoServer, n: int, timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = [int(str(r[0])) for r in demo.query("select id from calls order by id")]
        if len(ids) >= n:
            return ids
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {n} calls, have {demo.query('select count(*) from calls')}")


async def api_get(page: Any, path: str) -> Any:
    return await page.evaluate(
        "async (p) => { const r = await fetch(p, {headers: {Authorization: "
        "'Bearer ' + sessionStorage.getItem('carecall.token')}}); return {status: r.status, body: await r.json()}; }",
        path,
    )


HEADLINE = (
    "calls",
    "answer_median_s",
    "answer_p90_s",
    "answer_p99_s",
    "answer_within_60s_pct",
    "answer_within_180s_pct",
    "arrival_within_limit_pct",
    "unanswered",
    "review",
)


async def test_supervisor_dashboard_review_devices_and_wall(browser: Any, demo: DemoServer) -> None:
    started = time.monotonic()
    home = pick_home(demo)
    mine_device = home["device"]
    rows = demo.query(
        f"""select d.id from devices d join homes h on h.id = d.home_id join stations s on s.id = h.station_id
            where d.kind = 'button' and s.tier = 'community' and s.parent_id != '{home["street"]}' order by d.id"""
    )
    other_device = str(rows[0][0])
    demo.create_user("sv-street", home["street"], role="supervisor")
    demo.create_user("op-community", home["station"], role="operator")

    await alarm(demo, mine_device)
    await alarm(demo, other_device)
    ids = await wait_calls(demo, 2)
    by_device = {
        str(r[1]): int(str(r[0]))
        for r in demo.query("select c.id, d.id from calls c join devices d on d.home_id = c.home_id")
    }
    mine, other = by_device[mine_device], by_device[other_device]
    assert sorted(ids) == sorted([mine, other])
    # the county answers both and closes both as "no access": both are review calls
    headers = {"Authorization": f"Bearer {token(demo)}"}
    async with httpx.AsyncClient(base_url=demo.url, headers=headers) as http:
        for call_id in (mine, other):
            assert (await http.post(f"/api/v1/calls/{call_id}/acknowledge")).status_code == 200
            r = await http.post(f"/api/v1/calls/{call_id}/resolve", json={"outcome": "no_access"})
            assert r.status_code == 200, r.text

    page = await signed_in(browser, demo, "sv-street", PASSWORD)
    # the supervisor's entries are in the nav
    for view in ("oversight", "review", "devices", "wall"):
        assert await page.locator(f'nav a[data-view="{view}"]').is_visible()
    await page.click('nav a[data-view="oversight"]')
    await page.wait_for_selector("#view-oversight .headline")

    # charts drawn as inline SVG by our own code
    assert await page.locator("#ch-answer svg.chart-histogram .bar rect").count() >= 1
    assert await page.locator("#ch-compliance svg.chart-line .series").count() == 3
    assert await page.locator("#ch-type svg.chart-type .bar").count() == 1  # one sos call in scope
    assert await page.locator("#ch-hour svg.chart-hour .bar").count() == 24
    homes = await page.locator("#ch-coverage svg.chart-coverage circle.cov-home[data-home]").count()
    assert homes > 0

    # headline numbers are exactly the summary JSON
    summary = (await api_get(page, "/api/v1/reports/summary"))["body"]["summary"]
    for key in HEADLINE:
        shown = await page.locator(f'#view-oversight [data-figure="{key}"]').get_attribute("data-value")
        want = summary[key]
        assert (shown == "" and want is None) or float(shown or "nan") == want, (key, shown, want)
    # a street supervisor sees only that street: one call, not the other street's
    assert summary["calls"] == 1
    coverage = (await api_get(page, "/api/v1/reports/coverage"))["body"]
    assert homes == len(coverage["homes"]) and {h["street_id"] for h in coverage["homes"]} == {home["street"]}

    # coverage per shift of the roster: the night shift's map is the API's night figures
    night = (await api_get(page, "/api/v1/reports/coverage?shift=night"))["body"]
    night_outside = sum(1 for h in night["homes"] if not h["covered"])
    await page.select_option("#cov-shift", "night")
    await page.wait_for_function(
        "n => document.querySelectorAll('#ch-coverage svg.chart-coverage circle.cov-home.out[data-home]').length === n",
        arg=night_outside,
    )
    assert await page.locator("#ch-coverage .exports button.dl").count() == 6
    await page.select_option("#cov-shift", "")

    # downloads carry the token (fetch + blob), named like the API's
    async with page.expect_download() as dl:
        await page.locator("#view-oversight .exports button.dl").first.click()
    assert (await dl.value).suggested_filename == "carecall-summary.csv"

    # review list: our call with its timeline, never the other street's
    await page.click('nav a[data-view="review"]')
    await page.wait_for_selector("#view-review table.review")
    assert await page.locator("#view-review tr.rv").evaluate_all(
        "els => els.map(e => Number(e.dataset.call))"
    ) == [mine]
    await page.locator(f'#view-review tr.rv[data-call="{mine}"] summary').click()
    kinds = await page.locator(f'#view-review tr.rv[data-call="{mine}"] .timeline li').evaluate_all(
        "els => els.map(e => e.dataset.kind)"
    )
    assert kinds[0] == "event_received" and "acknowledged" in kinds and "resolved" in kinds, kinds
    assert await page.locator("#queue-list li.call").count() == 0  # both closed

    # device health: counts from the API, the street's devices only
    await page.click('nav a[data-view="devices"]')
    await page.wait_for_selector("#view-devices table.devices-health")
    devices = (await api_get(page, "/api/v1/reports/devices"))["body"]
    assert await page.locator('#view-devices [data-figure="devices"]').get_attribute("data-value") == str(
        devices["counts"]["devices"]
    )
    await page.check('#view-devices input[name="dev-filter"][value="all"]')
    await page.wait_for_function(
        f"document.querySelectorAll('#view-devices tbody tr').length === {min(1000, len(devices['rows']))}"
    )

    # big screen: dark, no controls, refreshes itself
    await page.goto(f"{demo.url}/console/?wall=1&every=2")
    await page.wait_for_selector("body.wall #view-wall .wall-grid")
    assert await page.locator(".top").is_hidden()
    assert await page.locator("#view-wall svg.chart").count() >= 4
    assert await page.locator('#view-wall [data-figure="calls"]').get_attribute("data-value") == "1"
    assert await page.locator("#view-wall button, #view-wall input").count() == 0
    stamp = await page.inner_text(".wall-stamp")
    await page.wait_for_function(
        "s => document.querySelector('.wall-stamp') && document.querySelector('.wall-stamp').textContent !== s",
        arg=stamp,
        timeout=5000,
    )

    # a community operator has no supervisor entries, and the pages say why
    op = await signed_in(browser, demo, "op-community", PASSWORD)
    assert await op.locator('nav a[data-view="oversight"]').is_hidden()
    await op.goto(f"{demo.url}/console/#/oversight")
    await op.wait_for_selector("#view-oversight .notice")
    assert (await api_get(op, "/api/v1/reports/summary"))["status"] == 403
    assert time.monotonic() - started < 40


OVERLAPS = """(sel) => {
  const boxes = [...document.querySelectorAll(sel)].map((e) => e.getBoundingClientRect())
    .filter((r) => r.width > 0);
  const hits = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5) hits.push([i, j]);
  }
  return { n: boxes.length, hits };
}"""

TEXTS = "els => els.map(e => e.textContent)"

DRAW = """async ({ labels, values }) => {
  const m = await import('/console/static/charts.js');
  const host = document.createElement('div');
  host.id = 'probe';
  host.style.width = '560px';
  host.innerHTML = m.barChart(labels, values, 'probe', { kind: 'probe' });
  document.body.append(host);
  return null;
}"""


async def test_charts_durations_scope_labels_and_live_board(browser: Any, demo: DemoServer) -> None:
    """Issue 13: count axes have whole-number ticks, axis labels never overlap (measured
    in the page), durations read as words in both languages, a street supervisor's wall
    names the street, the monthly report names it too and is translated, and the station
    board follows the live stream without pressing refresh."""
    home = pick_home(demo, skip=3)
    street_name = str(demo.query(f"select name from stations where id = '{home['street']}'")[0][0])
    demo.create_user("sv-street2", home["street"], role="supervisor")
    # a low battery in the street: device trouble, graded apart from the emergencies
    n_calls = len(demo.query("select id from calls"))
    await alarm(demo, home["device"], "low_battery")
    await wait_calls(demo, n_calls + 1)
    page = await signed_in(browser, demo, "sv-street2", PASSWORD)

    # the pure helpers, in the browser that runs them
    got = await page.evaluate(
        """async () => { const m = await import('/console/static/charts.js');
           return [m.formatDuration(72.4, 'en'), m.formatDuration(72.4, 'zh-CN'), m.formatDuration(2039.713, 'zh-CN'),
                   m.formatDuration(7500, 'en'), m.countTicks(3), m.countTicks(7), m.countTicks(0), m.countTicks(23)]; }"""
    )
    assert got[:4] == ["1 min 12 s", "1分12秒", "34分", "2 h 5 min"]
    assert got[4:] == [
        {"max": 3, "step": 1},
        {"max": 8, "step": 2},
        {"max": 1, "step": 1},
        {"max": 25, "step": 5},
    ]

    # a bar chart of counts with long labels: whole-number ticks, no two labels overlap
    long_labels = [
        "生命体征异常",
        "vital signs alert",
        "device offline",
        "low battery",
        "一键呼叫",
        "tamper",
    ] * 2
    await page.evaluate(DRAW, {"labels": long_labels, "values": [3, 1, 7, 2, 0, 5, 1, 1, 2, 3, 1, 4]})
    ticks = await page.locator("#probe svg .grid + text.tick").evaluate_all(TEXTS)
    assert ticks and all(t.isdigit() for t in ticks), ticks
    res = await page.evaluate(OVERLAPS, "#probe svg text.xlabel")
    assert res["n"] >= 4 and res["hits"] == [], res

    # the dashboard's own charts: counts in whole numbers, x labels apart
    await page.click('nav a[data-view="oversight"]')
    await page.wait_for_selector("#view-oversight .headline")
    for chart in ("#ch-type", "#ch-hour", "#ch-answer"):
        ticks = await page.locator(f"{chart} svg .grid + text.tick").evaluate_all(TEXTS)
        assert all(t.isdigit() for t in ticks), (chart, ticks)
        res = await page.evaluate(OVERLAPS, f"{chart} svg text.xlabel")
        assert res["hits"] == [], (chart, res)
    res = await page.evaluate(OVERLAPS, "#ch-compliance svg .legend text")
    assert res["hits"] == [], res
    median = await page.locator('#view-oversight [data-figure="answer_median_s"]').get_attribute("data-value")
    shown = (
        await page.locator('#view-oversight [data-figure="answer_median_s"] .fig-value').text_content() or ""
    )
    if median:
        assert "." not in shown and ("秒" in shown or "分" in shown), shown
    assert await page.locator('#view-oversight [data-figure="trouble_in_time_pct"]').count() == 1
    summary = (await api_get(page, "/api/v1/reports/summary"))["body"]["summary"]
    assert (
        summary["trouble_calls"] >= 1
        and summary["graded_calls"] == summary["calls"] - summary["trouble_calls"]
    )
    assert await page.locator('#ch-trouble table.trouble tr[data-type="low_battery"]').count() == 1

    # the monthly report names the street, in the language asked for
    month = time.strftime("%Y-%m", time.gmtime())
    for lang, heading in (("zh-CN", "月度监管报告"), ("en", "monthly oversight report")):
        html = await page.evaluate(
            "async (u) => (await fetch(u, {headers: {Authorization: 'Bearer ' + sessionStorage.getItem('carecall.token')}})).text()",
            f"/api/v1/reports/monthly?month={month}&lang={lang}",
        )
        assert heading in html and street_name in html
        assert "全县" not in html and "whole county" not in html

    # the wall names the street, not the county platform
    await page.goto(f"{demo.url}/console/?wall=1&every=30")
    await page.wait_for_selector("body.wall #view-wall .wall-grid")
    title = await page.locator(".wall-head h1").text_content() or ""
    assert street_name in title and "县" not in title.replace(street_name, ""), title

    # the station board follows the live stream: a new alarm shows without a refresh
    op = await signed_in(browser, demo, "county-op", "carecall-demo")
    await op.click('nav a[data-view="board"]')
    await op.wait_for_selector(f'#view-board tr[data-station="{home["station"]}"]')
    cell = f'#view-board tr[data-station="{home["station"]}"] td.open'
    before = int(await op.inner_text(cell))
    await alarm(demo, home["device"])
    await op.wait_for_function(
        "([sel, n]) => { const c = document.querySelector(sel); return c && Number(c.textContent) > n; }",
        arg=[cell, before],
        timeout=15000,
    )

"""The dashboard's service-orders panel and visit-compliance table in a real browser
against a real ``carecall demo``: a few orders booked, walked and cancelled through the
API, one welfare visit done, and the panel and table show exactly those numbers, in
English and in Chinese.

With ``CARECALL_SCREENSHOTS=1`` the test also writes docs/screenshots/
dashboard-orders-en.png and dashboard-orders-zh-CN.png (the orders panel and the compliance table).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import DemoServer
from tests.console.screenshots import signed_in_page
from tests.console.test_supervisor import api_get, token

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


async def _visits(demo: DemoServer, timeout: float = 60.0) -> list[tuple[object, ...]]:
    """The visits the demo's visits loop generated (it runs when the dispatcher starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = demo.query("select id, station_id, resident_id from visits where status = 'due' order by id")
        if rows:
            return rows
        await asyncio.sleep(0.5)
    raise AssertionError("the demo generated no welfare visits")


async def _step(http: httpx.AsyncClient, oid: int, action: str, **body: Any) -> dict[str, Any]:
    r = await http.post(f"/api/v1/orders/{oid}/{action}", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _book(http: httpx.AsyncClient, resident: str, station: str, kind: str) -> dict[str, Any]:
    r = await http.post("/api/v1/orders", json={"resident_id": resident, "kind": kind})
    assert r.status_code == 201, r.text
    order = dict(r.json())
    if order["status"] == "created":  # nobody free by routing: the operator assigns it
        order = await _step(http, order["id"], "assign", station_id=station)
    return order


async def seed(demo: DemoServer) -> dict[str, Any]:
    """Three orders (two meals, one chat), one of them done and rated 5, one cancelled; and
    one welfare visit done."""
    visits = await _visits(demo)
    residents = demo.query(
        "select r.id, h.station_id from residents r join homes h on h.id = r.home_id order by r.id limit 3"
    )
    headers = {"Authorization": f"Bearer {token(demo)}"}
    async with httpx.AsyncClient(base_url=demo.url, headers=headers) as http:
        (r1, s1), (r2, s2), (r3, s3) = ((str(a), str(b)) for a, b in residents)
        done = await _book(http, r1, s1, "meal")
        await _step(http, done["id"], "accept")
        await _step(http, done["id"], "start")
        await _step(http, done["id"], "done", notes="ok")
        await _step(http, done["id"], "confirm", satisfaction=5)
        cancelled = await _book(http, r2, s2, "meal")
        await _step(http, cancelled["id"], "cancel", reason="resident in hospital")
        await _book(http, r3, s3, "chat")
        visit_id, station, _ = visits[0]
        r = await http.post(f"/api/v1/visits/{visit_id}/done", json={"seen": "in_person"})
        assert r.status_code == 200, r.text
    return {"visit_station": str(station)}


async def test_orders_panel_and_visit_compliance_table(browser: Any, demo: DemoServer) -> None:
    seeded = await seed(demo)
    shots = os.environ.get("CARECALL_SCREENSHOTS") == "1"
    for lang in ("en", "zh-CN"):
        ctx, page = await signed_in_page(browser, demo, lang, height=1400)
        try:
            await page.wait_for_selector("#conn-state.ok")
            await page.click('nav a[data-view="oversight"]')
            await page.wait_for_selector("#ch-orders .orders-figs")
            await page.wait_for_selector("#ch-visits table.visits-compliance")
            month = (await api_get(page, "/api/v1/reports/summary"))["body"]["period"]["from"][:7]
            orders = (await api_get(page, f"/api/v1/reports/orders?month={month}"))["body"]
            visits = (await api_get(page, f"/api/v1/reports/visit-compliance?month={month}"))["body"]
            s = orders["summary"]
            # the seeded orders, counted as booked
            assert (s["orders"], s["done"], s["cancelled"], s["satisfaction_mean"]) == (3, 1, 1, 5.0)
            assert orders["cancellations"] == [{"reason": "resident in hospital", "orders": 1}]
            # the panel shows the API's figures
            for key in ("orders", "not_done", "cancelled", "satisfaction_mean"):
                shown = await page.locator(f'#ch-orders [data-figure="{key}"]').get_attribute("data-value")
                assert float(shown or "nan") == s[key], (key, shown)
            for key in ("accept_within_level_pct", "completion_within_level_pct"):
                shown = await page.locator(f'#ch-orders [data-figure="{key}"] .fig-value').inner_text()
                assert shown == ("—" if s[key] is None else f"{s[key]:g}%"), (key, shown)
            bars = await page.locator("#ch-orders svg.chart-orders-kind .bar").evaluate_all(
                "els => els.map(e => [e.dataset.label, Number(e.dataset.value)])"
            )
            assert orders["kind_names"]["meal"][lang] == {"en": "Meals", "zh-CN": "助餐"}[lang]
            want = {orders["kind_names"][k][lang]: n for k, n in (("chat", 1), ("meal", 2))}
            assert dict(bars) == want, bars
            kinds = await page.locator("#ch-orders table.orders-kinds tbody tr").evaluate_all(
                "els => els.map(e => [e.dataset.kind, Number(e.children[1].textContent)])"
            )
            assert kinds == [["chat", 1], ["meal", 2]]
            # the compliance table: one row per station, each cell the API's number
            rows = await page.locator("#ch-visits table.visits-compliance tbody tr").evaluate_all(
                """els => els.map(e => ({station: e.dataset.station,
                    due: Number(e.querySelector('[data-col=due]').textContent),
                    on_time: Number(e.querySelector('[data-col=done_on_time]').textContent),
                    late: Number(e.querySelector('[data-col=late]').textContent),
                    missed: Number(e.querySelector('[data-col=missed]').textContent),
                    open: Number(e.querySelector('[data-col=open]').textContent)}))"""
            )
            assert rows == [
                {
                    "station": st["station_id"],
                    "due": st["due"],
                    "on_time": st["done_on_time"],
                    "late": st["late"],
                    "missed": st["missed"],
                    "open": st["open"],
                }
                for st in visits["stations"]
            ]
            done_row = next(r for r in rows if r["station"] == seeded["visit_station"])
            assert done_row["on_time"] >= 1
            assert sum(r["on_time"] for r in rows) == 1 and sum(r["due"] for r in rows) >= 1
            header = await page.locator("#ch-visits table.visits-compliance thead").inner_text()
            assert ("Done on time" in header) if lang == "en" else ("按时完成" in header), header
            title = await page.locator("#ch-orders-h").inner_text()
            assert title.startswith("Service orders" if lang == "en" else "服务派单"), title
            assert await page.locator("#ch-orders .exports button.dl").count() == 8
            assert await page.locator("#ch-visits .exports button.dl").count() == 4
            if shots:
                # the orders panel and the compliance table, the page as tall as its content
                # (an element taller than the window would be shot under the sticky header)
                # (the view scrolls inside the window: make the window as tall as the view)
                tall = await page.evaluate(
                    "(() => { const v = document.querySelector('#view-oversight');"
                    " return v.getBoundingClientRect().top + v.scrollHeight; })()"
                )
                await page.set_viewport_size({"width": 1366, "height": int(tall) + 20})
                await page.locator("#sv-services").screenshot(
                    path=str(SHOTS / f"dashboard-orders-{lang}.png")
                )
        finally:
            await ctx.close()

"""The console's Orders (服务工单) and Visits (探访) tabs in a real browser against a real
``carecall demo``: an operator books an order from a phone call, it is routed to the
nearest provider with its reason, reassigned and cancelled; an SOS arriving meanwhile
still rings and is shown above the orders, never mixed into them; the visits tab lists
a late visit and cancels it with a reason.

``CARECALL_SCREENSHOTS=1`` also writes docs/screenshots/orders-en.png and
orders-zh-CN.png."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.console.conftest import DemoServer
from tests.console.test_browser import pick_home, signed_in, sos
from tests.console.test_i18n_browser import VISIBLE_TEXT, raw_codes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ADMIN = ("admin", "admin-password-1")  # CARECALL_ADMIN_PASSWORD of the demo fixture
OPERATOR = ("county-op", "carecall-demo")
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def token(demo: DemoServer, username: str, password: str) -> str:
    r = httpx.post(
        f"{demo.url}/api/v1/auth/token", data={"username": username, "password": password}, timeout=10
    )
    r.raise_for_status()
    return str(r.json()["access_token"])


def a_resident(demo: DemoServer, skip: int = 0) -> dict[str, Any]:
    """A resident of a community station's home, with the home's place."""
    rows = demo.query(
        """select r.id, r.name, h.id, h.address, h.station_id, h.lat, h.lon, s.name from residents r
           join homes h on h.id = r.home_id join stations s on s.id = h.station_id
           where s.tier = 'community' order by r.id"""
    )
    rid, name, home, address, station, lat, lon, station_name = rows[skip]
    return {
        "id": rid,
        "name": name,
        "home": home,
        "address": address,
        "station": station,
        "lat": lat,
        "lon": lon,
        "station_name": station_name,
    }


def add_provider(demo: DemoServer, pid: str, name: str, lat: float, lon: float) -> None:
    """A meals provider next door to the home (so it is the nearest), open round the clock."""
    body = {
        "id": pid,
        "name": name,
        "lat": lat,
        "lon": lon,
        "radius_km": 3,
        "hours": "24h",
        "kinds": ["meal", "cleaning"],
        "capacity": 5,
        "manager_name": "王经理",
    }
    r = httpx.post(
        f"{demo.url}/api/v1/providers",
        json=body,
        headers={"Authorization": f"Bearer {token(demo, *ADMIN)}"},
        timeout=10,
    )
    assert r.status_code in (201, 409), r.text


async def post(demo: DemoServer, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    """One API call as the demo's county operator (the provider's phone steps, extra orders)."""
    auth = {"Authorization": f"Bearer {token(demo, *OPERATOR)}"}
    async with httpx.AsyncClient(base_url=demo.url, headers=auth, timeout=10) as client:
        r = await client.post(path, json=body)
    assert r.status_code == status, r.text
    return dict(r.json())


async def book_from_form(page: Any, resident: dict[str, Any], kind: str, notes: str) -> int:
    await page.click("#ord-new")
    await page.fill("#ord-res-q", resident["name"])
    await page.click(f'.res-hit[data-id="{resident["id"]}"]')
    assert resident["name"] in await page.inner_text("#ord-res-chosen")
    await page.select_option("#ord-new-kind", kind)
    await page.fill("#ord-new-notes", notes)
    before = await page.locator("#ord-list li.order").count()
    await page.click("#ord-new-submit")
    await page.wait_for_function(
        "(n) => document.querySelectorAll('#ord-list li.order').length > n", arg=before, timeout=10000
    )
    await page.wait_for_selector(".order-head")
    return int(await page.locator("#ord-list li.order.selected").get_attribute("data-id"))


async def test_operator_books_routes_assigns_and_cancels_while_emergencies_come_first(
    browser: Any, demo: DemoServer
) -> None:
    resident = a_resident(demo)
    add_provider(demo, "meals-next-door", "邻里助餐", resident["lat"] + 0.0005, resident["lon"])

    page = await signed_in(browser, demo, *OPERATOR)
    await page.click('nav a[data-view="orders"]')
    await page.wait_for_selector("#ord-new")
    assert await page.locator("#ord-empty").is_visible()

    # an operator takes a phone call and books a meal from the form
    order_id = await book_from_form(page, resident, "meal", "电话预约：午餐少盐")
    row = demo.query(
        f"select provider_id, status, source, route_reasons, request_notes from orders where id = {order_id}"
    )
    provider_id, status, source, reasons, notes = row[0]
    assert (provider_id, status, source, notes) == (
        "meals-next-door",
        "assigned",
        "operator",
        "电话预约：午餐少盐",
    )
    assert "NEAREST_AVAILABLE" in str(reasons)
    detail = await page.inner_text("#ord-detail")
    assert "邻里助餐" in detail and resident["name"] in detail
    # the reason in words (zh-CN), never the bare code
    assert await page.inner_text(".route-codes") == "最近的可提供该服务、覆盖该地址、营业中且有余量"
    listed = await page.inner_text(f'#ord-list li.order[data-id="{order_id}"]')
    assert "邻里助餐" in listed and "助餐" in listed and "已派单" in listed
    # the timeline: the order's audit rows (GET /api/v1/orders/{id}/timeline), in words
    steps = await timeline_kinds(page, 2)
    assert steps == ["order_created", "order_assign"], steps
    timeline = await page.inner_text(".order-timeline")
    assert "下单" in timeline and "派单" in timeline and "county-op" in timeline, timeline

    # search by address and filter by kind / provider
    await page.fill("#ord-search", resident["address"])
    await page.wait_for_function("() => document.querySelectorAll('#ord-list li.order').length === 1")
    await page.select_option("#ord-kind", "cleaning")
    await page.wait_for_selector("#ord-empty:not([hidden])")
    await page.select_option("#ord-kind", "meal")
    await page.select_option("#ord-assignee", "provider:meals-next-door")
    await page.wait_for_selector(f'#ord-list li.order[data-id="{order_id}"]')
    await page.select_option("#ord-assignee", "")
    await page.fill("#ord-search", "")

    # reassign to the home's station: the suggestion and its reason are shown
    await page.click(".ord-act-assign")
    assert "邻里助餐" in await page.inner_text("#ord-assign-form")
    await page.select_option("#ord-target", f"station:{resident['station']}")
    await page.click("#ord-assign-form button[type=submit]")
    await page.wait_for_function(
        "(name) => document.querySelector('.order-reasons').textContent.includes(name)",
        arg=resident["station_name"],
        timeout=10000,
    )
    assert demo.query(f"select provider_id, assignee_station_id from orders where id = {order_id}")[0] == (
        None,
        resident["station"],
    )

    # nothing in the call queue: orders never enter it
    await page.click('nav a[data-view="queue"]')
    await page.wait_for_selector("#queue-empty:not([hidden])")
    assert await page.locator("#queue-list li.call").count() == 0
    await page.click('nav a[data-view="orders"]')
    await page.wait_for_selector(f'#ord-list li.order[data-id="{order_id}"]')
    assert await page.locator(".emergency-banner").is_hidden()

    # an SOS while on the orders tab: it rings, and a banner leads back to it
    home = pick_home(demo)
    await sos(demo, home["device"], f"orders-{time.time_ns()}")
    banner = page.locator("#view-orders .emergency-banner")
    await banner.wait_for(state="visible", timeout=5000)
    assert "1" in await banner.inner_text()
    call_id = int(await banner.locator("a").get_attribute("data-call"))
    await page.wait_for_function(
        "(id) => window.carecallAlarm.snapshot().ringing.includes(id)", arg=call_id, timeout=10000
    )
    await page.wait_for_function(
        "() => window.carecallAlarm.snapshot().plays.filter((p) => p.priority === 'P1').length >= 2",
        timeout=10000,
    )
    assert (await page.evaluate("() => window.carecallAlarm.snapshot()"))["looping"]
    assert "orders" in page.url
    # the order is not in the call queue; the call is the only thing there
    queue_ids = await page.locator("#queue-list li.call").evaluate_all(
        "els => els.map(e => Number(e.dataset.id))"
    )
    assert queue_ids == [call_id]
    assert demo.query(
        f"select count(*) from calls where id = {order_id} and home_id = '{resident['home']}'"
    ) == [(0,)]

    # cancel the order with a reason; the alarm keeps ringing meanwhile
    await page.click(f'#ord-list li.order[data-id="{order_id}"] button')
    await page.click(".ord-act-cancel")
    await page.fill("#ord-reason", "老人改期")
    await page.click("#ord-cancel-form button[type=submit]")
    await page.wait_for_selector(".order-head .ost-cancelled", timeout=10000)
    assert demo.query(f"select status, cancel_reason from orders where id = {order_id}") == [
        ("cancelled", "老人改期")
    ]
    await page.wait_for_selector('.order-timeline li[data-kind="order_cancel"]', timeout=10000)
    assert "老人改期" in await page.inner_text(".order-timeline")
    assert (await page.evaluate("() => window.carecallAlarm.snapshot()"))["ringing"] == [call_id]

    # the banner's link opens the call; acknowledging it clears the banner on the tab
    await banner.locator("a").click()
    await page.wait_for_selector(".detail-head")
    await page.keyboard.press("a")
    await page.wait_for_selector(".detail-head .st-acknowledged", timeout=10000)
    await page.click('nav a[data-view="orders"]')
    await page.wait_for_selector("#ord-new")
    await banner.wait_for(state="hidden", timeout=5000)
    await page.wait_for_function("() => !window.carecallAlarm.snapshot().looping", timeout=10000)


async def test_confirmation_and_close_from_the_orders_tab(browser: Any, demo: DemoServer) -> None:
    resident = a_resident(demo, skip=1)
    page = await signed_in(browser, demo, *OPERATOR)
    await page.goto(f"{demo.url}/#/orders")
    await page.wait_for_selector("#ord-new")
    order_id = await book_from_form(page, resident, "mobility", "")
    # the provider's people accept, start and finish it (their phone's steps, here over the API)
    for step, body in (("accept", {}), ("start", {}), ("done", {"notes": "陪同就医"})):
        await post(demo, f"/api/v1/orders/{order_id}/{step}", body)
    await page.reload()
    await page.wait_for_selector(".order-head .ost-done", timeout=10000)
    assert await page.locator(".ord-act-close").is_disabled()
    await page.click(".ord-act-confirm")
    await page.select_option("#ord-satisfaction", "4")
    await page.click("#ord-confirm-form button[type=submit]")
    await page.wait_for_selector(".order-head .ost-confirmed", timeout=10000)
    await page.click(".ord-act-close")
    await page.wait_for_selector(".order-head .ost-closed", timeout=10000)
    assert demo.query(f"select status, satisfaction, not_done from orders where id = {order_id}") == [
        ("closed", 4, 0)
    ]
    steps = await timeline_kinds(page, 7)
    assert steps == [
        "order_created",
        "order_assign",
        "order_accept",
        "order_start",
        "order_done",
        "order_confirm",
        "order_close",
    ], steps
    assert "4 / 5" in await page.inner_text(".order-timeline")
    # finished orders are hidden by the default filter, shown with "all"
    await page.select_option("#ord-status", "active")
    await page.wait_for_selector(f'#ord-list li.order[data-id="{order_id}"]', state="detached")
    await page.select_option("#ord-status", "closed")
    await page.wait_for_selector(f'#ord-list li.order[data-id="{order_id}"]')


async def timeline_kinds(page: Any, n: int) -> list[str]:
    """The audit kinds the order's timeline shows, once it shows ``n`` rows (it loads
    after the detail, and again when the order moves)."""
    await page.wait_for_function(f"() => document.querySelectorAll('.order-timeline li').length === {n}")
    kinds: list[str] = await page.locator(".order-timeline li").evaluate_all(
        "els => els.map(e => e.dataset.kind)"
    )
    return kinds


def _sqlite_time(at: datetime) -> str:
    return at.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_late_visit(demo: DemoServer, resident: dict[str, Any]) -> int:
    """A follow-up visit for ``resident``, due two hours ago and not done (late), put
    straight into the demo's database as the visits loop would."""
    now = datetime.now(UTC)
    key = f"{resident['id']}:follow_up:browser-{time.time_ns()}"
    demo.query(
        "insert into visit_plans (key, resident_id, category, frequency, anchor, active, created_at) "
        f"values ('{key}', '{resident['id']}', 'follow_up', 'once', '{_sqlite_time(now - timedelta(hours=30))}', 1, '{_sqlite_time(now)}')"
    )
    plan_id = demo.query(f"select id from visit_plans where key = '{key}'")[0][0]
    demo.query(
        "insert into visits (plan_id, period, resident_id, station_id, window_start, due_at, status, "
        "escalation_level, created_at, health, living_conditions, needs_found, follow_up_needed, notes) values "
        f"({plan_id}, 'once', '{resident['id']}', '{resident['station']}', '{_sqlite_time(now - timedelta(hours=30))}', "
        f"'{_sqlite_time(now - timedelta(hours=2))}', 'late', 0, '{_sqlite_time(now)}', '', '', '', 0, '')"
    )
    visit_id = demo.query(f"select id from visits where plan_id = {plan_id}")[0][0]
    return int(str(visit_id))


async def test_visits_tab_lists_and_cancels_a_late_visit(browser: Any, demo: DemoServer) -> None:
    resident = a_resident(demo, skip=2)
    visit_id = insert_late_visit(demo, resident)

    page = await signed_in(browser, demo, *OPERATOR)
    await page.click('nav a[data-view="visits"]')
    row = page.locator(f'#vis-rows tr.visit[data-id="{visit_id}"]')
    await row.wait_for(timeout=10000)
    text = await row.inner_text()
    assert resident["name"] in text and "呼叫后回访" in text and "逾期" in text, text
    # not visited this month: the operator's list says so (the report is for supervisors)
    assert resident["name"] in await page.inner_text("#vis-not-visited")

    # filter by station and status, search by name
    await page.select_option("#vis-station", resident["station"])
    await row.wait_for()
    await page.select_option("#vis-status", "late")
    await row.wait_for()
    await page.select_option("#vis-status", "missed")
    await row.wait_for(state="detached")
    await page.select_option("#vis-status", "open")
    await row.wait_for()
    await page.fill("#vis-search", resident["name"])
    await row.wait_for()

    # cancel it with a reason
    await row.locator(".visit-cancel").click()
    await page.fill(".vis-reason", "老人住院")
    await page.click(".visit-cancel-form button[type=submit]")
    await row.wait_for(state="detached", timeout=10000)
    assert demo.query(f"select status, cancel_reason from visits where id = {visit_id}") == [
        ("cancelled", "老人住院")
    ]
    await page.select_option("#vis-status", "cancelled")
    await row.wait_for()
    assert "老人住院" in await row.inner_text()
    assert await page.evaluate("() => [...globalThis.carecallI18nMissing]") == []


@pytest.mark.parametrize("locale", ["zh-CN", "en-GB"])
async def test_orders_and_visits_tabs_show_no_raw_code(browser: Any, demo: DemoServer, locale: str) -> None:
    lang = "en" if locale.startswith("en") else "zh-CN"
    resident = a_resident(demo, skip=7 if lang == "en" else 8)
    booked = await post(
        demo, "/api/v1/orders", {"resident_id": resident["id"], "kind": "bathing", "notes": "洗澡"}, 201
    )
    if booked["status"] == "created":  # nobody near offers it: the operator assigns it by hand
        await post(demo, f"/api/v1/orders/{booked['id']}/assign", {"station_id": resident["station"]})
    for step, body in (("accept", {}), ("start", {}), ("done", {"notes": "已完成"})):
        await post(demo, f"/api/v1/orders/{booked['id']}/{step}", body)
    insert_late_visit(demo, resident)
    ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale=locale)
    page = await ctx.new_page()
    await page.goto(f"{demo.url}/")
    await page.fill("#login-username", OPERATOR[0])
    await page.fill("#login-password", OPERATOR[1])
    await page.click("#login-submit")
    await page.wait_for_selector("#conn-state.ok")
    await page.goto(f"{demo.url}/#/orders/{booked['id']}")
    await page.wait_for_selector(".order-head .ost-done")
    await page.select_option("#ord-status", "all")
    await page.click(".order-reasons + details summary")
    await page.click(".ord-act-confirm")
    found = [f"orders: {x}" for x in raw_codes(await page.evaluate(VISIBLE_TEXT), lang)]
    await page.click("#ord-new")
    found += [f"new order: {x}" for x in raw_codes(await page.evaluate(VISIBLE_TEXT), lang)]
    await page.click('nav a[data-view="visits"]')
    await page.select_option("#vis-status", "all")
    await page.wait_for_selector("#vis-rows tr.visit")
    found += [f"visits: {x}" for x in raw_codes(await page.evaluate(VISIBLE_TEXT), lang)]
    assert await page.evaluate("() => [...globalThis.carecallI18nMissing]") == []
    assert found == []
    await ctx.close()


async def test_orders_screenshots(browser: Any, demo: DemoServer, tmp_path: Path) -> None:
    """The orders tab over a working day's orders, in both languages. With
    CARECALL_SCREENSHOTS=1 the pictures go to docs/screenshots/; otherwise to a temporary
    folder, so the page is still drawn and checked on every run."""
    out = SHOTS if os.environ.get("CARECALL_SCREENSHOTS") == "1" else tmp_path
    resident = a_resident(demo, skip=3)
    add_provider(demo, "clean-home", "洁家服务社", resident["lat"] + 0.001, resident["lon"] + 0.001)
    page = await signed_in(browser, demo, *OPERATOR)
    await page.goto(f"{demo.url}/#/orders")
    await page.wait_for_selector("#ord-new")
    order_id = await book_from_form(page, resident, "cleaning", "电话预约：周末打扫厨房")
    # a few more, at other steps, so the list looks like a working day
    for skip, kind, steps in (
        (4, "meal", ["accept", "start"]),
        (5, "medical", []),
        (6, "shopping", ["cancel"]),
    ):
        booked = await post(
            demo, "/api/v1/orders", {"resident_id": a_resident(demo, skip=skip)["id"], "kind": kind}, 201
        )
        for step in steps:
            await post(
                demo,
                f"/api/v1/orders/{booked['id']}/{step}",
                {"reason": "老人改期"} if step == "cancel" else {},
            )
    out.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "zh-CN"):
        ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale=lang)
        await ctx.add_init_script(f"localStorage.setItem('carecall.lang', '{lang}')")
        shot = await ctx.new_page()
        await shot.goto(f"{demo.url}/")
        await shot.fill("#login-username", OPERATOR[0])
        await shot.fill("#login-password", OPERATOR[1])
        await shot.click("#login-submit")
        await shot.wait_for_selector("#conn-state.ok")
        await shot.goto(f"{demo.url}/#/orders/{order_id}")
        await shot.wait_for_selector(".order-head")
        await shot.select_option("#ord-status", "all")
        await shot.click(".ord-act-assign")
        path = out / f"orders-{lang}.png"
        await shot.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        assert await shot.evaluate("() => [...globalThis.carecallI18nMissing]") == []
        await ctx.close()

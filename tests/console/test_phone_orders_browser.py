"""The responder's phone does service orders (派单) and welfare visits (探访), in a real
browser at 360×740 against a real ``carecall demo``.

- A device's service button (``service_request`` over MQTT) becomes an order; an operator
  hands it to the demo responder; the phone shows it (polling), an SOS from the same home
  pages the phone above the order and rings whatever tab is open; the order is accepted,
  checked in and checked out with a note from the phone; the family's confirmation
  (satisfaction 4) and the close go through the API; the audit rows name the people.
- A visit of the responder's station is checked in with the phone's location (granted
  geolocation), recorded with the structured form (follow-up, a service asked for); a
  second visit checked in without a location records none.

``CARECALL_SCREENSHOTS=1`` also writes docs/screenshots/phone-orders-{en,zh-CN}.png and
phone-visit-{en,zh-CN}.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from tests.console.conftest import PASSWORD, DemoServer
from tests.console.test_phone_browser import first_on_roster

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
# the app polls the open tab every 5 s: a new order shows within one poll and some margin
POLL_WAIT_MS = 15_000


async def screenshot(page: Any, name: str) -> None:
    """Writes docs/screenshots/<name>.png when CARECALL_SCREENSHOTS=1."""
    if os.environ.get("CARECALL_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def sign_in(page: Any, demo: DemoServer, username: str) -> None:
    await page.goto(f"{demo.url}/m/")
    await page.fill("#login-username", username)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#app-view:not([hidden])")


async def switch_language(page: Any, label: str) -> None:
    await page.locator(".lang-switch button", has_text=label).last.click()
    await page.wait_for_function(
        "want => document.documentElement.lang === want", arg="zh-CN" if label == "中文" else "en"
    )


async def no_missing_text(page: Any) -> None:
    assert await page.evaluate("[...globalThis.carecallI18nMissing]") == []


async def operator(demo: DemoServer, username: str) -> httpx.AsyncClient:
    """An API client signed in as ``username`` (the caller closes it)."""
    client = httpx.AsyncClient(base_url=demo.url, timeout=10)
    r = await client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    r.raise_for_status()
    client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return client


async def wait_for_row(demo: DemoServer, sql: str, timeout: float = 20.0) -> tuple[object, ...]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = demo.query(sql)
        if rows:
            return rows[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no row within {timeout}s: {sql}")


async def publish(device: aiomqtt.Client, device_id: str, body: dict[str, Any]) -> None:
    await device.publish(f"carecall/v1/devices/{device_id}/events", json.dumps(body), qos=1)


async def test_service_request_becomes_an_order_done_on_the_phone_and_closed(
    browser: Any, demo: DemoServer
) -> None:
    who = first_on_roster(demo)
    demo.create_user("op-orders", who["station"])
    demo.create_user("resp-orders", who["station"], role="responder", staff=who["staff"])

    ctx = await browser.new_context(**PHONE, locale="en-US")
    outside: list[str] = []
    ctx.on("request", lambda r: outside.append(r.url) if not r.url.startswith(demo.url) else None)
    phone = await ctx.new_page()
    await sign_in(phone, demo, "resp-orders")
    await phone.click("#tab-orders")
    await phone.wait_for_selector("#orders-empty:not([hidden])")

    secret = json.loads((demo.workdir / "carecall-demo-secrets.json").read_text())[who["device"]]
    calls_before = demo.query("select count(*) from calls")
    async with aiomqtt.Client(
        "127.0.0.1", demo.mqtt_port, username=who["device"], password=secret, identifier=who["device"]
    ) as device:
        event_id = f"svc-{time.time_ns()}"
        await publish(
            device,
            who["device"],
            {
                "id": event_id,
                "ts": int(time.time() * 1000),
                "type": "service_request",
                "data": {"kind": "meal"},
            },
        )
        order_id, status = await wait_for_row(
            demo, f"select id, status from orders where event_id = '{event_id}'"
        )
        assert demo.query("select count(*) from calls") == calls_before  # never an emergency call
        # the operator hands it to the person on the phone
        op = await operator(demo, "op-orders")
        r = await op.post(f"/api/v1/orders/{order_id}/assign", json={"staff_id": who["staff"]})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "assigned"

        assigned = time.monotonic()
        card = phone.locator(f"article.order[data-order='{order_id}']")
        await card.wait_for(timeout=POLL_WAIT_MS)
        shown_after = time.monotonic() - assigned
        text = await card.inner_text()
        assert "Meals" in text and "Accept by" in text and "Start by" in text, text
        assert await card.locator("a[href^='geo:']").count() == 1
        assert await card.locator("a[href^='amapuri:']").count() == 1
        assert await phone.locator("#tab-orders .badge").inner_text() == "1"
        await no_missing_text(phone)
        await screenshot(phone, "phone-orders-en")
        await switch_language(phone, "中文")
        assert "助餐" in await card.inner_text()
        await no_missing_text(phone)
        await screenshot(phone, "phone-orders-zh-CN")
        await switch_language(phone, "English")

        # an emergency at the same home comes first: above the orders, ringing on this tab
        sos = {
            "id": f"sos-{time.time_ns()}",
            "ts": int(time.time() * 1000),
            "type": "sos",
            "sensor": "button",
        }
        await publish(device, who["device"], sos)
        sent = time.monotonic()
        paged = phone.locator("article.call.paged")
        await paged.wait_for(timeout=5000)
        paged_after = time.monotonic() - sent
        assert await phone.locator("#orders-panel").is_visible()  # still on the orders tab
        call_box, order_box = await paged.bounding_box(), await card.bounding_box()
        assert call_box is not None and order_box is not None
        assert call_box["y"] < order_box["y"]
        assert (await phone.title()).startswith("(1)")  # the alarm is on (it sounds while a page waits)
        await paged.locator("button.primary").click()  # accept the emergency first
        await phone.wait_for_selector("article.call:not(.paged)")

        await card.locator("button.primary").click()  # accept the order
        await phone.wait_for_selector(f"article.order[data-order='{order_id}'][data-status='accepted']")
        await card.locator("button.go").click()  # check in
        await phone.wait_for_selector(f"article.order[data-order='{order_id}'][data-status='started']")
        assert "Checked in" in await card.inner_text()
        await card.locator("button.primary").click()  # check out…
        await phone.wait_for_selector("#checkout-dialog[open]")
        await phone.fill("#checkout-notes", "Lunch delivered, ate well")
        await phone.click("#checkout-ok")
        done = phone.locator(f"#orders-done article.order[data-order='{order_id}']")
        await done.wait_for(timeout=5000)
        flash = await phone.inner_text("#orders-flash")
        assert "Checked out: Meals" in flash and "took" in flash and "min" in flash, flash
        assert "Lunch delivered" in await done.inner_text()
        assert await phone.locator("#orders-empty").is_visible()

    # the family's confirmation, then the close, through the operators' API
    r = await op.post(f"/api/v1/orders/{order_id}/confirm", json={"satisfaction": 4})
    assert r.status_code == 200, r.text
    r = await op.post(f"/api/v1/orders/{order_id}/close")
    assert r.status_code == 200, r.text
    order = (await op.get(f"/api/v1/orders/{order_id}")).json()
    await op.aclose()
    assert order["status"] == "closed" and order["satisfaction"] == 4
    assert order["done_notes"] == "Lunch delivered, ate well" and order["duration_s"] is not None

    steps = [
        (kind, actor)
        for kind, actor, detail in demo.query("select kind, actor, detail from audit_log order by seq")
        if str(kind).startswith("order_") and json.loads(str(detail)).get("order_id") == order_id
    ]
    assert ("order_assign", "user:op-orders") in steps
    for kind in ("order_accept", "order_start", "order_done"):
        assert (kind, "user:resp-orders") in steps, steps
    for kind in ("order_confirm", "order_close"):
        assert (kind, "user:op-orders") in steps, steps
    assert status in ("created", "assigned")
    await no_missing_text(phone)
    assert outside == []
    print(
        f"order shown {shown_after * 1000:.0f} ms after it was assigned; SOS paged on the orders tab in {paged_after * 1000:.0f} ms"
    )
    await ctx.close()


def station_with_visits(demo: DemoServer) -> tuple[str, str, list[int]]:
    """A station with at least two open visits and a responder: (station, staff, visits).
    The visits are the dispatcher's first visits round's, which may come a moment after
    the demo says it is running: waited for (up to 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        rows = demo.query(
            """select v.station_id, group_concat(v.id) from visits v
               where v.status in ('due', 'late', 'missed') group by v.station_id
               having count(*) >= 2 order by v.station_id"""
        )
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for station, ids in rows:
        staff = demo.query(
            f"select id from staff where station_id = '{station}' and role = 'responder' order by id"
        )
        if staff:
            return str(station), str(staff[0][0]), sorted(int(i) for i in str(ids).split(","))
    raise AssertionError("the demo county has no station with two open visits and a responder")


async def test_a_visit_is_checked_in_with_location_and_recorded_from_the_phone(
    browser: Any, demo: DemoServer
) -> None:
    station, staff, (first, second, *_) = station_with_visits(demo)
    demo.create_user("resp-visits", station, role="responder", staff=staff)

    ctx = await browser.new_context(
        **PHONE,
        locale="en-US",
        geolocation={"latitude": 31.2304, "longitude": 121.4737},
        permissions=["geolocation"],
    )
    outside: list[str] = []
    ctx.on("request", lambda r: outside.append(r.url) if not r.url.startswith(demo.url) else None)
    phone = await ctx.new_page()
    await sign_in(phone, demo, "resp-visits")
    await phone.click("#tab-visits")
    card = phone.locator(f"article.visit[data-visit='{first}']")
    await card.wait_for(timeout=POLL_WAIT_MS)
    await card.locator("button.visit-checkin").click()
    await card.locator("[data-checkin='located']").wait_for(timeout=15_000)
    lat, lon = demo.query(f"select checkin_lat, checkin_lon from visits where id = {first}")[0]
    assert abs(float(str(lat)) - 31.2304) < 1e-4 and abs(float(str(lon)) - 121.4737) < 1e-4

    async def fill_form(texts: tuple[str, str, str, str]) -> None:
        await card.locator("button.visit-record").click()
        await phone.wait_for_selector("#visit-dialog[open]")
        assert await phone.locator("#visit-kind-meal").is_disabled()  # a service needs follow-up first
        await phone.check("#visit-seen-in_person")
        for field, text in zip(
            ("#visit-health", "#visit-living", "#visit-needs", "#visit-notes"), texts, strict=True
        ):
            await phone.fill(field, text)
        await phone.check("#visit-follow-up")
        await phone.check("#visit-kind-meal")
        # the form from its top, as the visitor sees it when it opens
        await phone.evaluate(
            "document.activeElement.blur(); document.querySelector('#visit-dialog').scrollTop = 0"
        )

    await fill_form(
        (
            "Good, blood pressure normal",
            "Tidy, heating works",
            "Hot meals on weekdays",
            "Daughter visits Sundays",
        )
    )
    await no_missing_text(phone)
    await screenshot(phone, "phone-visit-en")
    await phone.click("#visit-cancel")
    await switch_language(phone, "中文")
    await fill_form(("良好，血压正常", "整洁，暖气正常", "工作日需要送餐", "女儿周日来看望"))
    await no_missing_text(phone)
    await screenshot(phone, "phone-visit-zh-CN")
    await phone.click("#visit-ok")
    await phone.wait_for_selector("#visits-flash:not([hidden])")
    flash = await phone.inner_text("#visits-flash")
    assert "助餐" in flash, flash  # the service asked for is shown
    await card.wait_for(state="detached", timeout=5000)

    row = demo.query(
        f"""select status, seen, health, follow_up_needed, requested_service_kind, done_by
            from visits where id = {first}"""
    )[0]
    assert row[:5] == ("done", "in_person", "良好，血压正常", 1, "meal"), row
    assert "resp-visits" in str(row[5])
    kinds = [
        (kind, actor)
        for kind, actor, detail in demo.query("select kind, actor, detail from audit_log order by seq")
        if str(kind).startswith("visit_") and json.loads(str(detail)).get("visit_id") == first
    ]
    assert [k for k, _ in kinds] == ["visit_checked_in", "visit_done"], kinds
    assert all("resp-visits" in str(actor) for _, actor in kinds)
    await ctx.close()

    # a phone that gives no location checks in without one
    blind = await browser.new_context(**PHONE, locale="zh-CN")
    page = await blind.new_page()
    await sign_in(page, demo, "resp-visits")
    await page.click("#tab-visits")
    other = page.locator(f"article.visit[data-visit='{second}']")
    await other.wait_for(timeout=POLL_WAIT_MS)
    await other.locator("button.visit-checkin").click()
    await other.locator("[data-checkin='no-location']").wait_for(timeout=15_000)
    assert demo.query(f"select checkin_at is not null, checkin_lat from visits where id = {second}") == [
        (1, None)
    ]
    await no_missing_text(page)
    await blind.close()
    assert outside == []

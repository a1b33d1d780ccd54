"""A welfare visit's form opens a service order, in a real browser against a real
``carecall demo``: the responder's phone (360×740) records a visit with two services
needed and a note; the orders exist with the visit as their source, the phone shows
them after the save and, once the operator hands one to the responder, in its Orders
tab; the console's order detail shows the order's audit timeline, in both languages.

``CARECALL_SCREENSHOTS=1`` also writes docs/screenshots/phone-visit-order-{en,zh-CN}.png
and order-timeline-{en,zh-CN}.png.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.console.conftest import PASSWORD, DemoServer
from tests.console.test_phone_orders_browser import (
    PHONE,
    POLL_WAIT_MS,
    no_missing_text,
    operator,
    screenshot,
    sign_in,
    station_with_visits,
    switch_language,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def console_order(
    browser: Any, demo: DemoServer, username: str, order_id: int, locale: str, visit_id: int | None = None
) -> Any:
    """The console signed in as ``username`` in ``locale``, showing the order's detail:
    reached from the done visit's row in the Visits tab when ``visit_id`` is given."""
    ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale=locale)
    page = await ctx.new_page()
    await page.goto(f"{demo.url}/")
    await page.fill("#login-username", username)
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_selector("#app-view:not([hidden])")
    await page.wait_for_selector("#conn-state.ok")
    if visit_id is None:
        await page.goto(f"{demo.url}/#/orders/{order_id}")
    else:
        await page.goto(f"{demo.url}/#/visits")
        # the filters listen once the first list is drawn
        await page.wait_for_function("() => (document.querySelector('#vis-count') || {}).textContent")
        await page.select_option("#vis-status", "done")
        link = page.locator(f'tr.visit[data-id="{visit_id}"] a.visit-order[data-order="{order_id}"]')
        await link.wait_for(timeout=10000)
        assert str(order_id) in await link.inner_text()
        await link.click()
    await page.wait_for_selector(".order-head")
    assert str(order_id) in await page.inner_text(".order-head h3")
    return page


async def test_a_visit_form_opens_orders_the_phone_and_the_console_show(
    browser: Any, demo: DemoServer
) -> None:
    station, staff, (visit_id, *_) = station_with_visits(demo)
    demo.create_user("resp-vo", station, role="responder", staff=staff)
    demo.create_user("op-vo", station)
    resident = str(demo.query(f"select resident_id from visits where id = {visit_id}")[0][0])

    ctx = await browser.new_context(**PHONE, locale="en-US")
    outside: list[str] = []
    ctx.on("request", lambda r: outside.append(r.url) if not r.url.startswith(demo.url) else None)
    phone = await ctx.new_page()
    await sign_in(phone, demo, "resp-vo")
    await phone.click("#tab-visits")
    card = phone.locator(f"article.visit[data-visit='{visit_id}']")
    await card.wait_for(timeout=POLL_WAIT_MS)
    await card.locator("button.visit-record").click()
    await phone.wait_for_selector("#visit-dialog[open]")
    # services to order are a follow-up: offered once follow-up is ticked
    assert await phone.locator("#visit-kind-meal").is_disabled()
    assert await phone.locator("#visit-service-note").is_disabled()
    await phone.check("#visit-seen-in_person")
    await phone.fill("#visit-needs", "Cannot cook any more; the flat needs a clean")
    await phone.check("#visit-follow-up")
    await phone.check("#visit-kind-meal")
    await phone.check("#visit-kind-cleaning")
    await phone.fill("#visit-service-note", "Low-salt lunch; key with the neighbour")
    await no_missing_text(phone)
    await screenshot(phone, "phone-visit-order-en")
    await phone.click("#visit-ok")
    await phone.wait_for_selector("#visits-flash .opened-order")
    await card.wait_for(state="detached", timeout=5000)

    rows = demo.query(
        f"""select id, kind, source, visit_id, resident_id, request_notes, created_by
            from orders where visit_id = {visit_id} order by id"""
    )
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        ("meal", "visit", visit_id, resident),
        ("cleaning", "visit", visit_id, resident),
    ], rows
    assert {r[5] for r in rows} == {"Low-salt lunch; key with the neighbour"}
    assert {r[6] for r in rows} == {"user:resp-vo"}
    meal_id, cleaning_id = int(str(rows[0][0])), int(str(rows[1][0]))
    # the phone names the orders it opened, with their numbers
    opened = await phone.locator("#visits-flash .opened-order").evaluate_all(
        "els => els.map(e => [Number(e.dataset.order), e.dataset.kind])"
    )
    assert opened == [[meal_id, "meal"], [cleaning_id, "cleaning"]]
    flash = await phone.inner_text("#visits-flash")
    assert f"Order #{meal_id} opened: Meals" in flash and f"Order #{cleaning_id} opened: Cleaning" in flash, (
        flash
    )
    assert demo.query(f"select status, requested_service_kind from visits where id = {visit_id}") == [
        ("done", "meal")
    ]
    [(done_detail,)] = demo.query(
        f"select detail from audit_log where kind = 'visit_done' and json_extract(detail, '$.visit_id') = {visit_id}"
    )
    assert json.loads(str(done_detail))["order_ids"] == [meal_id, cleaning_id]

    # the station's operator hands the meal to the visitor: the phone's Orders tab shows it
    op = await operator(demo, "op-vo")
    r = await op.post(f"/api/v1/orders/{meal_id}/assign", json={"staff_id": staff})
    assert r.status_code == 200, r.text
    await op.aclose()
    await phone.click("#tab-orders")
    order_card = phone.locator(f"article.order[data-order='{meal_id}']")
    await order_card.wait_for(timeout=POLL_WAIT_MS)
    text = await order_card.inner_text()
    assert f"From visit #{visit_id}" in text and "Low-salt lunch" in text, text
    await no_missing_text(phone)
    await switch_language(phone, "中文")
    assert f"来自探访 #{visit_id}" in await order_card.inner_text()
    await no_missing_text(phone)
    await screenshot(phone, "phone-visit-order-zh-CN")
    assert outside == []
    await ctx.close()

    # the console's order detail: where the order came from and its audit timeline (every
    # order_* row of the meal: booked by the visitor, routed, handed out by the operator)
    audit = [
        (str(k), str(a))
        for k, a in demo.query(
            f"""select kind, actor from audit_log where kind like 'order_%'
                and json_extract(detail, '$.order_id') = {meal_id} order by seq"""
        )
    ]
    assert audit[0] == ("order_created", "user:resp-vo") and audit[-1] == ("order_assign", "user:op-vo"), (
        audit
    )
    for locale, words in (
        ("zh-CN", ("下单", "来源：探访", f"探访 #{visit_id}", "派单", "op-vo")),
        ("en-GB", ("Booked", "from welfare visit", f"visit #{visit_id}", "Assigned", "op-vo")),
    ):
        via = visit_id if locale == "zh-CN" else None
        page = await console_order(browser, demo, "op-vo", meal_id, locale, via)
        await page.wait_for_function(
            f"() => document.querySelectorAll('.order-timeline li').length === {len(audit)}", timeout=10000
        )
        kinds = await page.locator(".order-timeline li").evaluate_all("els => els.map(e => e.dataset.kind)")
        assert kinds == [k for k, _ in audit], kinds
        timeline = await page.inner_text(".order-timeline")
        for word in words:
            assert word in timeline, (locale, word, timeline)
        assert f"#{visit_id}" in await page.inner_text(".order-from-visit")
        assert await page.evaluate("[...(globalThis.carecallI18nMissing || [])]") == []
        await screenshot(page, f"order-timeline-{'en' if locale.startswith('en') else 'zh-CN'}")
        await page.context.close()
    reads = demo.query(
        "select username from record_reads where route = 'GET /api/v1/orders/{order_id}/timeline'"
    )
    assert ("op-vo",) in reads

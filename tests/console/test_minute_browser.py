"""The operator's decisive minute in a real browser against a real ``carecall demo``:
the numbers to ring back lead the call, a call back lands on the timeline, the send
dialog's order with its confirm button in a 1366×768 window, the 120 read-out, and an
escalated call staying with the home's own station."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.console.conftest import DemoServer
from tests.console.test_browser import signed_in
from tests.console.test_family_browser import sos_call

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOME_LINE = "0710-5550188"
MOBILE = "13912340001"


def home_with_staff(demo: DemoServer, skip: int) -> dict[str, str]:
    """A demo home with a call button, a resident and a responder on duty at its own
    community station; its phones and hand-off facts filled in."""
    rows = demo.query(
        """select d.id, h.id, h.station_id, r.id from devices d
           join homes h on h.id = d.home_id join stations s on s.id = h.station_id
           join residents r on r.home_id = h.id
           where d.kind = 'button' and s.tier = 'community'
             and exists (select 1 from staff st where st.station_id = h.station_id and st.on_duty = 1
                         and st.role in ('responder', 'nurse', 'doctor'))
           order by d.id"""
    )
    device, home, station, resident = (str(v) for v in rows[skip])
    demo.query(f"update homes set phone = '{HOME_LINE}', notes = '菜市场对面，红色大门' where id = '{home}'")
    demo.query(
        f"""update residents set phone = '{MOBILE}', medications = '硝苯地平 10mg 每日两次',
            allergies = '青霉素', access_notes = '钥匙在邻居302' where id = '{resident}'"""
    )
    return {"device": device, "home": home, "station": station, "resident": resident}


async def open_call(page: Any, call_id: int) -> None:
    btn = page.locator(f'.call-btn[data-id="{call_id}"]')
    await btn.wait_for(timeout=5000)
    await btn.click()
    await page.wait_for_selector(f'.detail-head h2:has-text("#{call_id}")')


async def call_api(page: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    return await page.evaluate(
        """async ([method, path, body]) => {
            const r = await fetch(path, {method, headers: {"Content-Type": "application/json",
              Authorization: "Bearer " + sessionStorage.getItem("carecall.token")},
              body: body ? JSON.stringify(body) : undefined});
            return {status: r.status, json: await r.json()};
        }""",
        [method, path, body],
    )


async def test_phones_lead_and_a_call_back_lands_on_the_timeline(browser: Any, demo: DemoServer) -> None:
    home = home_with_staff(demo, 0)
    demo.create_user("op-minute-1", home["station"])
    page = await signed_in(browser, demo, "op-minute-1")
    call_id = await sos_call(demo, home["device"])
    await open_call(page, call_id)
    # the numbers lead the detail, as tel: links, home line first
    tels = page.locator(".detail-head .phones a.tel")
    assert await tels.evaluate_all("els => els.map(e => e.getAttribute('href'))") == [
        f"tel:{HOME_LINE}",
        f"tel:{MOBILE}",
    ]
    # one key: C opens the record, Enter-ready with the home line and "talked" chosen
    await page.keyboard.press("c")
    await page.wait_for_selector("#action-dialog[open] .cb-outcomes")
    await page.check('input[name=cb-outcome][value="no_answer"]')
    await page.click("#dialog-ok")
    row = page.locator('.timeline li[data-kind="called_back"]')
    await row.wait_for(timeout=5000)
    text = await row.inner_text()
    assert "已回拨" in text and "家庭座机" in text and "无人接听" in text and "op-minute-1" in text
    assert HOME_LINE not in text  # the record names the line, not the number
    # one's own acknowledgement reads as one's own
    await page.keyboard.press("a")
    await page.wait_for_selector(".detail-head .st-acknowledged")
    assert (await page.inner_text(".detail-head .ackby")).startswith("您已于")
    await page.context.close()


async def test_send_dialog_ranks_and_keeps_confirm_in_view(browser: Any, demo: DemoServer) -> None:
    home = home_with_staff(demo, 1)
    page = await signed_in(browser, demo, "county-op", "carecall-demo")
    call_id = await sos_call(demo, home["device"])
    # at the county, everyone of the county could go: a long list
    r = await call_api(page, "POST", f"/api/v1/calls/{call_id}/escalate", {"to": "county"})
    assert r["status"] == 200, r
    await open_call(page, call_id)
    ranked = (await call_api(page, "GET", f"/api/v1/console/calls/{call_id}/candidates"))["json"]
    assert len(ranked) > 10
    await page.keyboard.press("d")
    items = page.locator("#action-dialog[open] .cand-list li")
    await items.first.wait_for(timeout=5000)
    shown = await items.evaluate_all("els => els.map(e => e.dataset.staff)")
    assert shown == [r["staff_id"] for r in ranked]
    states = [r["state"] for r in ranked]
    assert states == sorted(states, key=["free", "busy", "off_duty"].index)
    # the nearest free first, by whole minutes; the home's own station first among equals
    free = [r for r in ranked if r["state"] == "free"]
    minutes = [-(-r["eta_s"] // 60) for r in free]
    assert ranked[0] is free[0] and minutes == sorted(minutes)
    own = [r for r in free if r["station_id"] == home["station"]]
    assert own and all("OWN_STATION" in r["reasons"] for r in own)
    same_minute = [r for r, m in zip(free, minutes, strict=True) if m == minutes[0]]
    assert same_minute[0]["station_id"] == home["station"] or home["station"] not in {
        r["station_id"] for r in same_minute
    }
    # only the top free person is ticked; nobody busy or off duty can be
    ticked = await page.locator("input[name=staff]:checked").evaluate_all("els => els.map(e => e.value)")
    assert ticked == [ranked[0]["staff_id"]]
    enabled = await page.locator("input[name=staff]:not([disabled])").evaluate_all(
        "els => els.map(e => e.value)"
    )
    assert enabled == [r["staff_id"] for r in ranked if r["state"] == "free"]
    own_row = page.locator(f'.cand-list li[data-staff="{own[0]["staff_id"]}"]')
    assert "本户所属站点" in await own_row.inner_text()
    assert "最近的空闲人员" in await items.first.inner_text()
    # the confirm button is inside the 1366×768 window without scrolling
    box = await page.locator("#dialog-ok").bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 768, box
    body = page.locator("#dialog-body")
    assert await body.evaluate("el => el.scrollHeight > el.clientHeight")  # the list scrolls instead
    await page.click("#dialog-ok")
    await page.wait_for_selector(".detail-head .st-dispatched")
    sent = page.locator('.timeline li[data-kind="responder_dispatched"]')
    await sent.first.wait_for(timeout=5000)
    assert ranked[0]["name"] in await sent.first.inner_text()
    await page.context.close()


async def test_the_120_read_out_shows_the_residents_facts(browser: Any, demo: DemoServer) -> None:
    home = home_with_staff(demo, 2)
    demo.create_user("op-minute-3", home["station"])
    page = await signed_in(browser, demo, "op-minute-3")
    call_id = await sos_call(demo, home["device"])
    await open_call(page, call_id)
    await page.keyboard.press("h")
    summary = page.locator("#action-dialog[open] .handoff-summary")
    await summary.wait_for(timeout=5000)
    [(address, lat, lon, capacity)] = demo.query(
        f"select h.address, h.lat, h.lon, r.capacity_level from homes h join residents r on r.home_id = h.id "
        f"where h.id = '{home['home']}' and r.id = '{home['resident']}'"
    )
    facts = {
        cls: await summary.locator(f"dd.{cls}").inner_text()
        for cls in ("ho-address", "ho-landmark", "ho-location", "ho-medications", "ho-allergies", "ho-access")
    }
    assert facts == {
        "ho-address": address,
        "ho-landmark": "菜市场对面，红色大门",
        "ho-location": f"{float(str(lat)):.5f}, {float(str(lon)):.5f}",
        "ho-medications": "硝苯地平 10mg 每日两次",
        "ho-allergies": "青霉素",
        "ho-access": "钥匙在邻居302",
    }
    assert await summary.locator("dd.ho-capacity").inner_text() != "—"
    assert int(str(capacity)) in range(5)
    assert MOBILE in await summary.locator("dd.ho-phones").inner_text()
    box = await page.locator("#dialog-ok").bounding_box()
    assert box is not None and box["y"] + box["height"] <= 768, box
    await page.check('input[name=ho-to][value="120"]')
    await page.click("#dialog-ok")
    row = page.locator('.timeline li[data-kind="handoff"]')
    await row.wait_for(timeout=5000)
    assert "120" in await row.inner_text()
    [(detail,)] = demo.query(f"select detail from audit_log where call_id = {call_id} and kind = 'handoff'")
    assert json.loads(str(detail))["to"] == "120"
    await page.context.close()


async def test_the_home_station_keeps_an_escalated_call(browser: Any, demo: DemoServer) -> None:
    home = home_with_staff(demo, 3)
    demo.create_user("op-minute-4", home["station"])
    page = await signed_in(browser, demo, "op-minute-4")
    county = await signed_in(browser, demo, "county-op", "carecall-demo")
    call_id = await sos_call(demo, home["device"])
    await open_call(page, call_id)
    # the county takes it up the tree; the home's station is told live and keeps it
    r = await call_api(county, "POST", f"/api/v1/calls/{call_id}/escalate", {"to": "county"})
    assert r["status"] == 200 and r["json"]["station_id"] != home["station"], r
    await page.wait_for_selector('.timeline li[data-kind="escalated"]', timeout=5000)
    assert await page.locator(f'.call-btn[data-id="{call_id}"]').count() == 1
    # after a reload too (the queue is read afresh), and it may still act
    await page.reload()
    await page.wait_for_selector("#conn-state.ok")
    await open_call(page, call_id)
    await page.keyboard.press("a")
    await page.wait_for_selector(".detail-head .st-acknowledged")
    await page.context.close()
    await county.context.close()

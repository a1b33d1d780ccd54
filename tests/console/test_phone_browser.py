"""The responder's phone and the operator's console side by side, in a real browser.

Two contexts against a real ``carecall demo``: the console (desktop) and the phone of the
first responder on the home's station roster (360×740, touch). An SOS over MQTT pages the
phone within 2 s; accepting shows on the console; en route, on scene and resolved from
the phone reach the device as acks; the timeline names the person.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiomqtt
import pytest

from tests.console.conftest import PASSWORD, DemoServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def first_on_roster(demo: DemoServer) -> dict[str, str]:
    """A home with a call button whose community station has a free responder on duty;
    the first such person in roster order (name, id) is the one paged first."""
    rows = demo.query(
        """select d.id, h.station_id from devices d
           join homes h on h.id = d.home_id join stations s on s.id = h.station_id
           where d.kind = 'button' and s.tier = 'community'
             and exists (select 1 from residents r where r.home_id = h.id)
           order by d.id"""
    )
    for device, station in rows:
        staff = demo.query(
            f"""select id, name from staff where station_id = '{station}' and on_duty = 1 and busy = 0
                and role in ('responder', 'nurse', 'doctor', 'manager') order by name, id"""
        )
        if staff:
            return {
                "device": str(device),
                "station": str(station),
                "staff": str(staff[0][0]),
                "name": str(staff[0][1]),
            }
    raise AssertionError("the demo county has no station with a responder on duty")


async def test_sos_pages_the_phone_and_the_phone_takes_the_call_to_the_end(
    browser: Any, demo: DemoServer
) -> None:
    who = first_on_roster(demo)
    demo.create_user("op-phone-test", who["station"])
    # through `carecall users create` itself: the one browser test of the command's path
    demo.create_user("resp-phone", who["station"], role="responder", staff=who["staff"], cli=True)

    console_ctx = await browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    console = await console_ctx.new_page()
    await console.goto(f"{demo.url}/")
    await console.fill("#login-username", "op-phone-test")
    await console.fill("#login-password", PASSWORD)
    await console.click("#login-submit")
    await console.wait_for_selector("#conn-state.ok")

    phone_ctx = await browser.new_context(
        viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True, locale="zh-CN"
    )
    outside: list[str] = []
    phone_ctx.on("request", lambda r: outside.append(r.url) if not r.url.startswith(demo.url) else None)
    phone = await phone_ctx.new_page()
    await phone.goto(f"{demo.url}/m/")
    await phone.fill("#login-username", "resp-phone")
    await phone.fill("#login-password", PASSWORD)
    await phone.click("#login-submit")
    await phone.wait_for_selector("#app-view:not([hidden])")
    assert await phone.inner_text("#me-name") == who["name"]
    await phone.wait_for_selector("#empty:not([hidden])")

    secret = json.loads((demo.workdir / "carecall-demo-secrets.json").read_text())[who["device"]]
    acks: list[str] = []
    async with aiomqtt.Client(
        "127.0.0.1", demo.mqtt_port, username=who["device"], password=secret, identifier=who["device"]
    ) as device:
        await device.subscribe(f"carecall/v1/devices/{who['device']}/ack", qos=1)

        async def listen() -> None:
            async for message in device.messages:
                assert isinstance(message.payload, bytes)
                acks.append(json.loads(message.payload)["state"])

        listener = asyncio.create_task(listen())
        event_id = f"ph-{time.time_ns()}"
        body = {"id": event_id, "ts": int(time.time() * 1000), "type": "sos", "sensor": "bedside-button"}
        await device.publish(f"carecall/v1/devices/{who['device']}/events", json.dumps(body), qos=1)
        sent = time.monotonic()
        card = phone.locator("article.call.paged")
        await card.wait_for(timeout=15_000)  # pushed to the phone (how fast: the bench)
        paged_after = time.monotonic() - sent
        assert "P1" in await card.inner_text()
        assert await phone.locator("a[href^='tel:']").count() >= 1  # the family, one tap away
        assert await phone.locator("a[href^='geo:']").count() == 1

        await card.locator("button.primary").click()  # accept
        await phone.wait_for_selector("article.call:not(.paged)")
        await console.wait_for_selector("#queue-list .st-dispatched", timeout=15_000)

        for _ in ("en route", "on scene"):
            await phone.locator("button.go").first.click()
            await asyncio.sleep(0.3)
        await phone.wait_for_selector("article.call button.primary")  # resolve is offered on scene
        await phone.locator("article.call button.primary").click()
        await phone.wait_for_selector("#resolve-dialog[open]")
        await phone.select_option("#resolve-outcome", "helped_on_site")
        await phone.fill("#resolve-note", "血压正常，已安抚")
        await phone.click("#resolve-ok")
        await phone.wait_for_selector("#empty:not([hidden])", timeout=15_000)

        deadline = time.monotonic() + 10
        while "resolved" not in acks and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        listener.cancel()
    for state in ("received", "en_route", "on_scene", "resolved"):
        assert state in acks, (state, acks)

    rows = demo.query(
        "select kind, actor from audit_log where call_id = (select max(id) from calls) order by seq"
    )
    by_phone = [kind for kind, actor in rows if actor == "user:resp-phone"]
    for kind in ("page_accepted", "acknowledged", "responder_dispatched", "en_route", "on_scene", "resolved"):
        assert kind in by_phone, (kind, by_phone)
    assert outside == []  # nothing left the host
    print(f"phone paged {paged_after * 1000:.0f} ms after the SOS was published")

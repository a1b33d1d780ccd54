"""The family's link in a real browser, against a real ``carecall demo``: an SOS over
MQTT opens a call; the resident's first contact opens their link on a phone, sees the
page and answers "I'm going"; a tampered link, a link of another call and an expired
link each get the plain page saying so (and never this call's details)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest

from dispatcher.auth.tokens import TokenSigner, load_secret_key
from dispatcher.family.link import derive_key, make_link
from tests.console.conftest import DemoServer
from tests.console.test_phone_browser import first_on_roster

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def sos_call(demo: DemoServer, device: str) -> int:
    """Publish an SOS as the device; the id of the call it opened."""
    secret = json.loads((demo.workdir / "carecall-demo-secrets.json").read_text())[device]
    before = int(str(demo.query("select coalesce(max(id), 0) from calls")[0][0]))
    async with aiomqtt.Client(
        "127.0.0.1", demo.mqtt_port, username=device, password=secret, identifier=device
    ) as client:
        body = {
            "id": f"fam-{time.time_ns()}",
            "ts": int(time.time() * 1000),
            "type": "sos",
            "sensor": "bedside-button",
        }
        await client.publish(f"carecall/v1/devices/{device}/events", json.dumps(body), qos=1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = demo.query(
            f"select id from calls where id > {before} and home_id = (select home_id from devices where id = '{device}') order by id"
        )
        if rows:
            return int(str(rows[0][0]))
        await asyncio.sleep(0.1)
    raise AssertionError("the SOS opened no call")


async def test_the_family_link_opens_answers_and_refuses_bad_links(browser: Any, demo: DemoServer) -> None:
    who = first_on_roster(demo)
    call_id = await sos_call(demo, who["device"])
    [(contact_id, resident_name)] = demo.query(
        f"""select c.id, r.name from contacts c join calls k on k.resident_id = c.resident_id
            join residents r on r.id = c.resident_id
            where k.id = {call_id} order by c.priority, c.id limit 1"""
    )
    key = TokenSigner(load_secret_key(environ=os.environ, path=demo.workdir / "carecall-secret.key")).subkey(
        derive_key
    )
    now = datetime.now(UTC)
    token = make_link(key, call_id=call_id, contact_id=int(str(contact_id)), now=now)

    ctx = await browser.new_context(
        viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True, locale="en-GB"
    )
    page = await ctx.new_page()
    await page.goto(f"{demo.url}/f/{token}")
    text = await page.inner_text("main")
    assert "What happened" in text and str(resident_name) in text
    await page.get_by_role("button", name="I'm going").click()
    await page.wait_for_selector("p.state")
    assert "Your answer was recorded: I'm going" in await page.inner_text("p.state")
    answers = demo.query(
        f"select detail from audit_log where call_id = {call_id} and kind = 'contact_answered' order by seq"
    )
    assert [json.loads(str(d))["answer"] for (d,) in answers] == ["going"]

    body, mac = token.rsplit(".", 1)
    tampered = f"{body}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    response = await page.goto(f"{demo.url}/f/{tampered}")
    assert response is not None and response.status == 404
    text = await page.inner_text("main")
    assert "not valid" in text and str(resident_name) not in text

    # a genuine link for another call (this contact, another call id) never opens this one
    other = make_link(key, call_id=call_id + 1000, contact_id=int(str(contact_id)), now=now)
    response = await page.goto(f"{demo.url}/f/{other}")
    assert response is not None and response.status == 404
    text = await page.inner_text("main")
    assert "not valid" in text and str(resident_name) not in text

    old = make_link(key, call_id=call_id, contact_id=int(str(contact_id)), now=now - timedelta(days=2))
    response = await page.goto(f"{demo.url}/f/{old}")
    assert response is not None and response.status == 410
    text = await page.inner_text("main")
    assert "expired" in text and str(resident_name) not in text
    await ctx.close()

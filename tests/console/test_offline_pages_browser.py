"""Every page CareCall serves works with no way out of the building: a real browser opens
the console (each of its views, drawn: the supervisors' dashboard, review, device health,
the board, the admin view with the importer showing a refused file; a call's detail with
its map and the send, 120 and call-back dialogs), the wall, the API docs (/docs, /redoc),
the responder's phone app (/m/) and a family link (/f/…) against a real ``carecall
demo``, and not one request leaves the host.

Every request of the browser context goes through a route: one to 127.0.0.1 or localhost
goes on, any other is refused and recorded, and the test fails naming it.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from carecall.shell.demo import DEMO_PASSWORD, DEMO_RESPONDER
from dispatcher.auth.tokens import TokenSigner, load_secret_key
from dispatcher.family.link import derive_key, make_link
from tests.console.conftest import DemoServer
from tests.console.test_family_browser import sos_call
from tests.console.test_phone_browser import first_on_roster

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
ADMIN = ("admin", "admin-password-1")  # CARECALL_ADMIN_PASSWORD of the demo fixture
SETTLE_S = 1.5  # a page's late requests (charts, map tiles, fonts) have time to go out
# each console view, and what it shows once its data is in: the supervisors' dashboard,
# the review, device health, the board and the admin view with the importer
VIEWS = {
    "queue": "#queue-tools #queue-search",
    "board": "table.board",
    "oversight": "#view-oversight .headline",
    "review": "#view-review table.review",
    "devices": "#view-devices table.devices-health",
    "admin": "#importer-form",
}
BAD_HOMES = "id,station_id,address,lat,lon,phone\noff-h1,{station},建设路1号,95,112.85,打电话给我\n"


def is_local(url: str) -> bool:
    """Whether ``url`` stays on this host (data: and blob: URLs never leave it)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return (parts.hostname or "") in LOCAL_HOSTS


async def guarded_context(browser: Any, outside: list[str], **options: Any) -> Any:
    """A browser context whose every request is checked: local ones go on, any other is
    refused (the page sees a network error) and recorded in ``outside``."""
    ctx = await browser.new_context(**options)

    async def route(r: Any) -> None:
        url = r.request.url
        if is_local(url):
            await r.continue_()
        else:
            outside.append(url)
            await r.abort("blockedbyclient")

    await ctx.route("**/*", route)
    # requests a route does not see (a service worker's, a WebSocket) are still recorded
    ctx.on("request", lambda req: None if is_local(req.url) else outside.append(req.url))
    ctx.on(
        "page",
        lambda page: page.on("websocket", lambda ws: None if is_local(ws.url) else outside.append(ws.url)),
    )
    return ctx


def test_is_local_tells_the_host_from_the_world() -> None:
    assert is_local("http://127.0.0.1:8000/console/")
    assert is_local("http://localhost/m/")
    assert is_local("data:image/png;base64,AAAA")
    assert not is_local("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css")
    assert not is_local("https://fonts.googleapis.com/css?family=Roboto")
    assert not is_local("http://127.0.0.1.example.com/")


async def settle(page: Any) -> None:
    await page.wait_for_load_state("load")
    await asyncio.sleep(SETTLE_S)


async def test_every_page_loads_nothing_from_outside(browser: Any, demo: DemoServer) -> None:
    outside: list[str] = []
    seen: list[str] = []  # the pages visited, for the failure message

    # the console, each of its views, as the county's admin (who may see them all)
    ctx = await guarded_context(browser, outside, viewport={"width": 1366, "height": 768}, locale="zh-CN")
    page = await ctx.new_page()
    page.on("request", lambda req: seen.append(req.url))
    await page.goto(f"{demo.url}/console/")
    await page.fill("#login-username", ADMIN[0])
    await page.fill("#login-password", ADMIN[1])
    await page.click("#login-submit")
    await page.wait_for_selector("#app-view:not([hidden])")
    await page.wait_for_selector("#conn-state.ok")
    await settle(page)
    for view, drawn in VIEWS.items():
        await page.goto(f"{demo.url}/console/#/{view}")
        await page.wait_for_selector(f"#view-{view}:not([hidden])")
        await page.wait_for_selector(drawn, timeout=20_000)  # the view drew its data, not a blank
        await settle(page)
    # the importer (admin view) with a refused file: its problem table
    station = str(demo.query("select id from stations where tier = 'community' order by id limit 1")[0][0])
    await page.set_input_files(
        "#importer-file",
        files=[
            {
                "name": "homes.csv",
                "mimeType": "text/csv",
                "buffer": BAD_HOMES.format(station=station).encode(),
            }
        ],
    )
    await page.click("#importer-form button[type=submit]")
    await page.wait_for_selector("table.import-errors tbody tr")
    await settle(page)
    # a call's detail with its map, and the operator's dialogs on it (send, 120, call-back)
    who = first_on_roster(demo)
    call_id = await sos_call(demo, who["device"])
    await page.goto(f"{demo.url}/console/#/call/{call_id}")
    await page.wait_for_selector(f'.detail-head h2:has-text("#{call_id}")', timeout=15_000)
    await page.wait_for_selector(".map-panel")
    await settle(page)
    for letter, drawn in (("d", ".cand-list"), ("h", ".handoff-summary"), ("c", ".cb-outcomes")):
        await page.evaluate(
            "() => document.activeElement && document.activeElement.blur()"
        )  # a key, not typing
        await page.keyboard.press(letter)
        await page.wait_for_selector(f"#action-dialog[open] {drawn}", timeout=10_000)
        await settle(page)
        await page.keyboard.press("Escape")
        await page.wait_for_selector("#action-dialog[open]", state="detached", timeout=5_000)
    # the wall (big screen)
    await page.goto(f"{demo.url}/console/?wall=1&every=2")
    await page.wait_for_selector("body.wall #view-wall .wall-grid")
    await settle(page)

    # the API docs: Swagger UI and ReDoc, drawn from files served here
    await page.goto(f"{demo.url}/docs")
    await page.wait_for_selector(".swagger-ui .info .title")
    assert "CareCall" in await page.inner_text(".swagger-ui .info .title")
    await page.wait_for_selector(".opblock")
    await settle(page)
    await page.goto(f"{demo.url}/redoc")
    await page.wait_for_selector("h1:has-text('CareCall')", timeout=30_000)
    await settle(page)
    await ctx.close()

    # the responder's phone app, with the login the demo prints
    phone_ctx = await guarded_context(
        browser,
        outside,
        viewport={"width": 360, "height": 740},
        is_mobile=True,
        has_touch=True,
        locale="zh-CN",
    )
    phone = await phone_ctx.new_page()
    phone.on("request", lambda req: seen.append(req.url))
    await phone.goto(f"{demo.url}/m/")
    await phone.fill("#login-username", DEMO_RESPONDER)
    await phone.fill("#login-password", DEMO_PASSWORD)
    await phone.click("#login-submit")
    await phone.wait_for_selector("#app-view:not([hidden])")
    await settle(phone)

    # the family's page of the call opened above
    [(contact_id,)] = demo.query(
        f"""select c.id from contacts c join calls k on k.resident_id = c.resident_id
            where k.id = {call_id} order by c.priority, c.id limit 1"""
    )
    key = TokenSigner(load_secret_key(environ=os.environ, path=demo.workdir / "carecall-secret.key")).subkey(
        derive_key
    )
    token = make_link(key, call_id=call_id, contact_id=int(str(contact_id)), now=datetime.now(UTC))
    response = await phone.goto(f"{demo.url}/f/{token}")
    assert response is not None and response.status == 200
    await settle(phone)
    await phone_ctx.close()

    assert len(seen) > 20  # the pages did load their scripts, styles and data
    assert not outside, f"requests left the host: {sorted(set(outside))}"

"""The console in a real browser under the security headers: it works with the strict
Content-Security-Policy (no violation reported), opens the live feed with a stream
ticket (never the bearer token in a URL), and "Sign out" revokes the token on the server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.console.conftest import DemoServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_console_under_csp_uses_tickets_and_signs_out_on_the_server(
    browser: Any,
    demo: DemoServer,
) -> None:
    ctx = await browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    page = await ctx.new_page()
    messages: list[str] = []
    stream_urls: list[str] = []
    page.on("console", lambda m: messages.append(m.text))
    page.on("request", lambda r: stream_urls.append(r.url) if "/api/v1/stream" in r.url else None)
    await page.goto(f"{demo.url}/")
    await page.fill("#login-username", "county-op")
    await page.fill("#login-password", "carecall-demo")
    await page.click("#login-submit")
    await page.wait_for_selector("#app-view:not([hidden])")
    await page.wait_for_selector("#conn-state.ok")
    token = await page.evaluate("sessionStorage.getItem('carecall.token')")
    assert token
    assert stream_urls and all("ticket=" in u and token not in u and "token=" not in u for u in stream_urls)
    assert not [m for m in messages if "Content Security Policy" in m], messages

    async with httpx.AsyncClient(base_url=demo.url) as http:
        headers = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/api/v1/auth/me", headers=headers)).status_code == 200
        await page.click("#logout")
        await page.wait_for_selector("#login-view:not([hidden])")
        for _ in range(50):  # the sign-out request is sent as the page returns to the login
            if (await http.get("/api/v1/auth/me", headers=headers)).status_code == 401:
                break
            await page.wait_for_timeout(100)
        assert (await http.get("/api/v1/auth/me", headers=headers)).status_code == 401
    await ctx.close()

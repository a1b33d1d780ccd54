"""Desktop notifications in a real browser: when the operator has allowed them (a context
granted the 'notifications' permission), a new SOS shows one, titled in the console's
language; without the permission none is shown.

``window.Notification`` is replaced by a recording stand-in before the page loads (a
headless browser shows no desktop notification to look at); the stand-in reports the
browser's real permission, so the grant of the context is what the console sees.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.console.conftest import DemoServer
from tests.console.test_browser import pick_home
from tests.console.test_family_browser import sos_call

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RECORDER = """
(() => {
  const Real = window.Notification;
  const made = [];
  window.__notifications = made;
  class Recorder {
    constructor(title, options = {}) {
      made.push({ title, body: options.body, tag: options.tag, requireInteraction: !!options.requireInteraction });
      this.title = title;
      this.onclick = null;
    }
    close() {}
    static get permission() { return Real ? Real.permission : "denied"; }
    static requestPermission() { return Real ? Real.requestPermission() : Promise.resolve("denied"); }
  }
  window.Notification = Recorder;
})();
"""


async def console(browser: Any, demo: DemoServer, lang: str, *, granted: bool) -> Any:
    ctx = await browser.new_context(
        viewport={"width": 1366, "height": 768},
        locale=lang,
        permissions=["notifications"] if granted else [],
    )
    await ctx.add_init_script(f"localStorage.setItem('carecall.lang', '{lang}')")
    await ctx.add_init_script(RECORDER)
    page = await ctx.new_page()
    await page.goto(f"{demo.url}/")
    await page.fill("#login-username", "county-op")
    await page.fill("#login-password", "carecall-demo")
    await page.click("#login-submit")
    await page.wait_for_selector("#app-view:not([hidden])")
    await page.wait_for_selector("#conn-state.ok")
    return page


async def notifications_of(page: Any, call_id: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The notifications shown for ``call_id``, once the call is in the queue."""
    await page.locator(f'#queue-list li.call[data-id="{call_id}"]').wait_for(timeout=timeout * 1000)
    await asyncio.sleep(0.5)  # the alarm runs on the same update as the queue
    made: list[dict[str, Any]] = await page.evaluate("() => window.__notifications")
    return [n for n in made if n["tag"] == f"carecall-call-{call_id}"]


@pytest.mark.parametrize(("lang", "title"), [("zh-CN", "P1 呼叫 #{id}"), ("en", "P1 call #{id}")])
async def test_a_new_sos_shows_a_notification_in_the_console_s_language(
    browser: Any, demo: DemoServer, lang: str, title: str
) -> None:
    page = await console(browser, demo, lang, granted=True)
    assert await page.evaluate("() => window.carecallAlarm.snapshot().notifications") == "granted"
    call_id = await sos_call(demo, pick_home(demo, 0 if lang == "zh-CN" else 1)["device"])
    shown = await notifications_of(page, call_id)
    assert len(shown) == 1, shown
    (note,) = shown
    assert note["title"] == title.format(id=call_id)
    assert note["requireInteraction"] is True  # a P1 stays until someone looks
    address = str(
        demo.query(f"select h.address from calls c join homes h on h.id = c.home_id where c.id = {call_id}")[
            0
        ][0]
    )
    assert address in note["body"]
    await page.context.close()


async def test_without_the_permission_no_notification(browser: Any, demo: DemoServer) -> None:
    page = await console(browser, demo, "zh-CN", granted=False)
    assert await page.evaluate("() => window.carecallAlarm.snapshot().notifications") != "granted"
    call_id = await sos_call(demo, pick_home(demo, 2)["device"])
    assert await notifications_of(page, call_id) == []
    assert await page.evaluate("() => window.__notifications") == []
    await page.context.close()

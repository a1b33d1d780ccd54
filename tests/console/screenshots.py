"""Take the console screenshots for docs/console.md: queue, call detail and map, in
Chinese and English, at 1366×768 against a fresh ``carecall demo``.

    .venv/bin/python -m tests.console.screenshots [OUT_DIR]   (default docs/screenshots)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, DemoServer, free_port
from tests.console.test_browser import pick_home, sos


async def shoot(out: Path) -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        demo = DemoServer(Path(tmp), free_port(), free_port())
        demo.start()
        try:
            for skip in (0, 3, 7):  # a few calls so the queue has something to order
                await sos(demo, pick_home(demo, skip)["device"], f"shot-{skip}-{time.time_ns()}")
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for lang in ("zh-CN", "en"):
                    ctx = await browser.new_context(viewport={"width": 1366, "height": 768}, locale=lang)
                    await ctx.add_init_script(f"localStorage.setItem('carecall.lang', '{lang}')")
                    page = await ctx.new_page()
                    await page.goto(f"{demo.url}/")
                    await page.fill("#login-username", "county-op")
                    await page.fill("#login-password", "carecall-demo")
                    await page.click("#login-submit")
                    await page.locator("#queue-list li.call").nth(2).wait_for()
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"queue-{lang}.png"))
                    await page.locator("#queue-list li.call button").first.click()
                    await page.wait_for_selector(".detail-head")
                    await page.keyboard.press("a")
                    await page.wait_for_selector(".detail-head .st-acknowledged")
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"detail-{lang}.png"))
                    await page.locator(".map-panel").scroll_into_view_if_needed()
                    await page.locator(".map-panel").screenshot(path=str(out / f"map-{lang}.png"))
                    await page.goto(f"{demo.url}/console/#/board")
                    await page.wait_for_selector("table.board")
                    await page.screenshot(path=str(out / f"board-{lang}.png"))
                    await ctx.close()
                await browser.close()
        finally:
            demo.stop()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/screenshots")
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(target))

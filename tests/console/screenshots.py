"""Take the console screenshots for docs/console.md (queue, call detail, map, board) and
docs/oversight.md (supervisors' dashboard and big-screen mode), in Chinese and English,
against a fresh ``carecall demo``.

    .venv/bin/python -m tests.console.screenshots [OUT_DIR] [--only operator|supervisor]
        [--history DEMO_DIR]
    (default docs/screenshots, both sets; --history: the supervisor pages over the folder
    of a `carecall demo --history-days 30` run instead of a handful of fresh calls)
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, DemoServer, free_port
from tests.console.test_browser import pick_home, sos
from tests.console.test_supervisor import seed_calls


async def signed_in_page(browser: Any, demo: DemoServer, lang: str, *, height: int) -> tuple[Any, Any]:
    """A 1366-wide page in ``lang``, signed in as the demo's county operator."""
    ctx = await browser.new_context(viewport={"width": 1366, "height": height}, locale=lang)
    await ctx.add_init_script(f"localStorage.setItem('carecall.lang', '{lang}')")
    page = await ctx.new_page()
    await page.goto(f"{demo.url}/")
    await page.fill("#login-username", "county-op")
    await page.fill("#login-password", "carecall-demo")
    await page.click("#login-submit")
    return ctx, page


async def shoot_supervisor(out: Path, history: Path | None = None) -> None:
    """The dashboard (a tall page, 1366 wide) and the wall display (1920×1080, what a
    county platform's screen shows), after a handful of SOS and fall calls over MQTT that
    the county operator answers, sends someone to and closes; or, given ``history``, over
    the folder of a ``carecall demo --history-days 30`` run (its database, key and
    secrets are copied, never changed)."""
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory() as tmp:
        if history is not None:
            for name in ("carecall.db", "carecall-secret.key", "carecall-demo-secrets.json"):
                if (history / name).exists():
                    shutil.copy2(history / name, Path(tmp) / name)
        demo = DemoServer(Path(tmp), free_port(), free_port())
        demo.start(timeout=120.0)
        try:
            if history is None:
                await seed_calls(demo, homes=6)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for lang in ("zh-CN", "en"):
                    ctx, page = await signed_in_page(browser, demo, lang, height=1330)
                    await page.wait_for_selector("#conn-state.ok")
                    await page.goto(f"{demo.url}/console/#/oversight")
                    await page.wait_for_selector("#ch-coverage svg.chart-coverage")
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"dashboard-{lang}.png"))
                    await page.set_viewport_size({"width": 1920, "height": 1080})
                    await page.goto(f"{demo.url}/console/?wall=1")
                    await page.wait_for_selector("body.wall #view-wall .wall-grid")
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"wall-{lang}.png"))
                    await ctx.close()
                await browser.close()
        finally:
            demo.stop()


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
                    ctx, page = await signed_in_page(browser, demo, lang, height=768)
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
    args = sys.argv[1:]
    only = None
    history = None
    if "--only" in args:
        i = args.index("--only")
        only = args[i + 1]
        del args[i : i + 2]
    if "--history" in args:
        i = args.index("--history")
        history = Path(args[i + 1])
        del args[i : i + 2]
    target = Path(args[0]) if args else Path("docs/screenshots")
    target.mkdir(parents=True, exist_ok=True)
    if only in (None, "operator"):
        asyncio.run(shoot(target))
    if only in (None, "supervisor"):
        asyncio.run(shoot_supervisor(target, history))

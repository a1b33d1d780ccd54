"""Take the console screenshots for docs/console.md (queue, call detail leading with the
phones, map, call-back, send and 120 hand-off dialogs, board, the "sound is blocked"
notice, the importer's problem table, a storm: grouped queue with an incident line) and
docs/oversight.md (supervisors' dashboard with its device-trouble table, big-screen
mode), in Chinese and English, against a fresh ``carecall demo``.

    .venv/bin/python -m tests.console.screenshots [OUT_DIR] [--only operator|supervisor|phone]
        [--history DEMO_DIR]
    (default docs/screenshots, both sets; --history: the supervisor pages over the folder
    of a `carecall demo --history-days 30` run instead of a handful of fresh calls)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, DemoServer, free_port
from tests.console.test_browser import pick_home, sos
from tests.console.test_family_browser import sos_call
from tests.console.test_minute_browser import home_with_staff, open_call
from tests.console.test_storm_browser import AUTOPLAY_RULE, TYPES, publish_all
from tests.console.test_supervisor import alarm, seed_calls

ADMIN = ("admin", "admin-password-1")  # CARECALL_ADMIN_PASSWORD of DemoServer
BAD_HOMES = (
    "id,station_id,address,lat,lon,phone\n"
    "shot-h1,{station},建设路1号,32.69,112.85,0377-6123 4567\n"
    "shot-h1,{station},建设路2号,32.69,112.85,\n"
    "shot-h2,{station},建设路3号,32.69,112.85,打电话给我\n"
    "shot-h3,{station},建设路4号,95,112.85,\n"
    "shot-h4,no-such-station,建设路5号,32.69,112.85,\n"
)
STORM_CALLS = 15  # calls of several types, one per home
STORM_DARK = 30  # devices that go offline together: one incident line (min_devices 20)


async def signed_in_page(
    browser: Any,
    demo: DemoServer,
    lang: str,
    *,
    height: int,
    login: tuple[str, str] = ("county-op", "carecall-demo"),
) -> tuple[Any, Any]:
    """A 1366-wide page in ``lang``, signed in (by default as the demo's county operator)."""
    ctx = await browser.new_context(viewport={"width": 1366, "height": height}, locale=lang)
    await ctx.add_init_script(f"localStorage.setItem('carecall.lang', '{lang}')")
    page = await ctx.new_page()
    await page.goto(f"{demo.url}/")
    await page.fill("#login-username", login[0])
    await page.fill("#login-password", login[1])
    await page.click("#login-submit")
    return ctx, page


async def dialog_shot(page: Any, key: str, drawn: str, path: Path) -> None:
    """Press ``key`` on the open call, shoot its dialog once ``drawn`` shows, close it."""
    await page.evaluate("() => document.activeElement && document.activeElement.blur()")  # keys, not typing
    await page.keyboard.press(key)
    await page.wait_for_selector(f"#action-dialog[open] {drawn}", timeout=10_000)
    await page.wait_for_timeout(300)
    await page.screenshot(path=str(path))
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#action-dialog[open]", state="detached", timeout=5_000)


async def shoot_blocked_sound(ctx: Any, demo: DemoServer, path: Path) -> None:
    """The signed-in session reopened in a tab nobody has clicked in (a browser restart),
    with P1 calls ringing: the page says sound is blocked."""
    first = ctx.pages[0]
    token = await first.evaluate("() => sessionStorage.getItem('carecall.token')")
    page = await ctx.new_page()
    await page.add_init_script(f"sessionStorage.setItem('carecall.token', {json.dumps(token)})")
    await page.add_init_script(AUTOPLAY_RULE)
    await page.goto(f"{demo.url}/#/queue")
    await page.wait_for_selector("#sound-notice:visible", timeout=15_000)
    await page.wait_for_timeout(300)
    await page.screenshot(path=str(path))
    await page.close()


async def shoot_importer(browser: Any, demo: DemoServer, lang: str, path: Path) -> None:
    """The admin's importer after a refused homes file: every problem in the reader's language."""
    ctx, page = await signed_in_page(browser, demo, lang, height=768, login=ADMIN)
    await page.wait_for_selector("#app-view:not([hidden])")
    await page.goto(f"{demo.url}/#/admin")
    await page.wait_for_selector("#importer-form")
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
    panel = page.locator(".panel.importer")
    await panel.scroll_into_view_if_needed()
    await page.wait_for_timeout(300)
    await panel.screenshot(path=str(path))
    await ctx.close()


async def make_storm(demo: DemoServer) -> None:
    """Calls of several types from other homes, and a block of devices going offline
    together (one mass offline incident)."""
    rows = [(str(h), str(d)) for h, d in demo.query("select home_id, id from devices order by home_id, id")]
    senders: dict[str, str] = {}
    for home, device in rows:
        senders.setdefault(home, device)
    homes = sorted(senders.items())[-(STORM_CALLS + 40) :]
    callers = homes[:STORM_CALLS]
    skip = {h for h, _ in homes}
    dark = [d for h, d in rows if h not in skip][-STORM_DARK:]
    await publish_all(demo, [(d, "status", {"state": "offline"}) for d in dark])
    now_ms = int(time.time() * 1000)
    await publish_all(
        demo,
        [
            (
                d,
                "events",
                {"id": f"shot-st-{i}-{time.time_ns()}", "ts": now_ms, "type": TYPES[i % len(TYPES)]},
            )
            for i, (_, d) in enumerate(callers)
        ],
    )


async def shoot_storm(browser: Any, demo: DemoServer, lang: str, path: Path) -> None:
    """The queue in a storm, filtered and grouped, with the incident line."""
    ctx, page = await signed_in_page(browser, demo, lang, height=768)
    await page.wait_for_selector("#conn-state.ok")
    await page.locator("#queue-list li.call.incident").first.wait_for(timeout=90_000)
    # filtered to the incident's priority ("n / total" in the header), grouped by type
    prio = await page.locator("#queue-list li.call.incident .prio").first.inner_text()
    await page.select_option("#queue-priority", prio.strip())
    await page.select_option("#queue-group", "type")
    await page.wait_for_selector("#queue-list li.group-head")
    await page.wait_for_timeout(500)
    await page.screenshot(path=str(path))
    await ctx.close()


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
                # device trouble (its own table on the dashboard): low batteries
                buttons = [
                    str(r[0]) for r in demo.query("select id from devices where kind = 'button' order by id")
                ]
                for device in buttons[1::7][:4]:
                    await alarm(demo, device, "low_battery")
                await asyncio.sleep(2)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for lang in ("zh-CN", "en"):
                    ctx, page = await signed_in_page(browser, demo, lang, height=1330)
                    await page.wait_for_selector("#conn-state.ok")
                    await page.goto(f"{demo.url}/console/#/oversight")
                    await page.wait_for_selector("#ch-coverage svg.chart-coverage")
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"dashboard-{lang}.png"))
                    trouble = page.locator("#ch-trouble")
                    await page.wait_for_selector("#ch-trouble table.trouble, #ch-trouble #trouble-empty")
                    await trouble.scroll_into_view_if_needed()
                    await trouble.screenshot(path=str(out / f"dashboard-trouble-{lang}.png"))
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
            # a home with its phones and hand-off facts filled in, whose call is opened
            home = home_with_staff(demo, 0)
            call_id = await sos_call(demo, home["device"])
            for skip in (3, 7, 11):  # a few more calls so the queue has something to order
                await sos(demo, pick_home(demo, skip)["device"], f"shot-{skip}-{time.time_ns()}")
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for lang in ("zh-CN", "en"):
                    ctx, page = await signed_in_page(browser, demo, lang, height=768)
                    await page.locator("#queue-list li.call").nth(3).wait_for()
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"queue-{lang}.png"))
                    await open_call(page, call_id)
                    await page.keyboard.press("a")
                    await page.wait_for_selector(".detail-head .st-acknowledged")
                    await page.wait_for_selector(".detail-head .phones a.tel")
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"detail-{lang}.png"))
                    await dialog_shot(page, "c", ".cb-outcomes", out / f"callback-{lang}.png")
                    await dialog_shot(page, "d", ".cand-list li", out / f"send-{lang}.png")
                    await dialog_shot(page, "h", ".handoff-summary", out / f"handoff-{lang}.png")
                    await page.locator(".map-panel").scroll_into_view_if_needed()
                    await page.locator(".map-panel").screenshot(path=str(out / f"map-{lang}.png"))
                    await page.goto(f"{demo.url}/console/#/board")
                    await page.wait_for_selector("table.board")
                    await page.screenshot(path=str(out / f"board-{lang}.png"))
                    await shoot_blocked_sound(ctx, demo, out / f"sound-blocked-{lang}.png")
                    await ctx.close()
                    await shoot_importer(browser, demo, lang, out / f"importer-{lang}.png")
                await make_storm(demo)
                for lang in ("zh-CN", "en"):
                    await shoot_storm(browser, demo, lang, out / f"storm-{lang}.png")
                await browser.close()
        finally:
            demo.stop()


async def shoot_phone(out: Path) -> None:
    """The responder's phone (360×740): a page ringing, then the call accepted, per language."""
    from playwright.async_api import async_playwright

    from tests.console.conftest import PASSWORD
    from tests.console.test_phone_browser import first_on_roster

    with tempfile.TemporaryDirectory() as tmp:
        demo = DemoServer(Path(tmp), free_port(), free_port())
        demo.start()
        try:
            who = first_on_roster(demo)
            demo.create_user("resp-shot", who["station"], role="responder", staff=who["staff"])
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for n, lang in enumerate(("zh-CN", "en")):
                    ctx = await browser.new_context(
                        viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True, locale=lang
                    )
                    await ctx.add_init_script(f"localStorage.setItem('carecall.lang', '{lang}')")
                    page = await ctx.new_page()
                    await page.goto(f"{demo.url}/m/")
                    await page.fill("#login-username", "resp-shot")
                    await page.fill("#login-password", PASSWORD)
                    await page.click("#login-submit")
                    await page.wait_for_selector("#app-view:not([hidden])")
                    await sos(demo, who["device"], f"shot-phone-{n}-{time.time_ns()}")
                    await page.wait_for_selector("article.call.paged", timeout=5000)
                    await page.screenshot(path=str(out / f"phone-page-{lang}.png"))
                    await page.locator("article.call.paged button.primary").click()
                    await page.wait_for_selector("article.call:not(.paged)")
                    await page.screenshot(path=str(out / f"phone-accepted-{lang}.png"))
                    for _ in ("en route", "on scene"):  # each tap redraws the card: wait for it
                        await page.locator("article.call button.go").first.click()
                        await page.wait_for_timeout(300)
                    await page.wait_for_selector("article.call button.primary")  # resolve, on scene
                    await page.locator("article.call button.primary").click()
                    await page.select_option("#resolve-outcome", "helped_on_site")
                    await page.click("#resolve-ok")
                    await page.wait_for_selector("#empty:not([hidden])")
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
    if only in (None, "phone"):
        asyncio.run(shoot_phone(target))

"""The call's map in a real browser: Leaflet over the basemap that CareCall serves itself,
read by range requests, with no request leaving the host and no CSP violation."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import pytest

from tests.console.conftest import DemoServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BASEMAP_PATH = "/console/basemap.pmtiles"


async def watch_sos_away_from_home(demo: DemoServer, event_id: str) -> tuple[float, float]:
    """A demo watch's SOS with a GPS fix ~400 m north-east of its home; returns the fix."""
    device, lat, lon = demo.query(
        """select d.id, h.lat, h.lon from devices d join homes h on h.id = d.home_id
           where d.kind = 'watch' and exists (select 1 from residents r where r.home_id = h.id)
           order by d.id limit 1"""
    )[0]
    fix = (float(lat) + 0.003, float(lon) + 0.003)  # type: ignore[arg-type]
    secret = json.loads((demo.workdir / "carecall-demo-secrets.json").read_text())[str(device)]
    async with aiomqtt.Client(
        "127.0.0.1", demo.mqtt_port, username=str(device), password=secret, identifier=str(device)
    ) as client:
        body = {
            "id": event_id,
            "ts": int(time.time() * 1000),
            "type": "sos",
            "data": {"location": {"lat": fix[0], "lon": fix[1], "accuracy_m": 15}},
        }
        await client.publish(f"carecall/v1/devices/{device}/events", json.dumps(body), qos=1)
    return fix


async def call_of(demo: DemoServer, fix: tuple[float, float]) -> int:
    """The id of the call the watch's SOS opened (it is placed where the watch said)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = demo.query(
            f"select id from calls where abs(lat - {fix[0]}) < 1e-6 and abs(lon - {fix[1]}) < 1e-6 "
            "order by id desc limit 1"
        )
        if rows:
            return int(rows[0][0])  # type: ignore[call-overload]
        await asyncio.sleep(0.2)
    raise AssertionError("the watch's call was not created")


async def open_call(
    browser: Any, demo: DemoServer, call_id: int, lang: str
) -> tuple[Any, Any, list[Any], list[str]]:
    ctx = await browser.new_context(viewport={"width": 1366, "height": 900}, locale=lang)
    await ctx.add_init_script(f"localStorage.setItem('carecall.lang', '{lang}')")
    requests: list[Any] = []
    csp_errors: list[str] = []
    ctx.on("request", lambda r: requests.append(r))
    page = await ctx.new_page()
    page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)
    await page.goto(f"{demo.url}/")
    await page.fill("#login-username", "county-op")
    await page.fill("#login-password", "carecall-demo")
    await page.click("#login-submit")
    await page.wait_for_selector("#conn-state.ok")
    await page.locator(f"#queue-list li.call[data-id='{call_id}'] button").click(timeout=15_000)
    # Leaflet's map with basemap tiles (data: images read from the archive) in the detail
    await page.wait_for_selector(".callmap .leaflet-container", timeout=15_000)
    await page.wait_for_function(
        """() => [...document.querySelectorAll('.callmap .leaflet-tile-container img.leaflet-tile-loaded')]
             .filter(i => i.src.startsWith('data:image/png') && i.naturalWidth === 256).length >= 4""",
        timeout=20_000,
    )
    return ctx, page, requests, csp_errors


async def test_map_shows_streets_from_our_host_only(browser: Any, demo: DemoServer) -> None:
    assert await _basemap_answers_ranges(demo), (
        "the basemap route is not mounted (dispatcher.console.tiles.basemap_router)"
    )
    call_id = await call_of(demo, await watch_sos_away_from_home(demo, "map-browser-1"))
    ctx, page, requests, csp_errors = await open_call(browser, demo, call_id, "zh-CN")

    panel = page.locator(".map-panel")
    assert await panel.locator("path.map-reach-area").count() == 1  # the service circle
    assert await panel.locator("path.map-home-marker").count() == 1
    assert await panel.locator("path.map-target-marker").count() == 1  # the watch's fix
    assert await panel.locator("path.map-station-marker").count() >= 1
    text = await panel.inner_text()
    assert "住户" in text and "分钟服务圈" in text and "救助地点" in text
    # the sketch drawn before the map loaded is hidden, not shown twice
    assert not await panel.locator("svg.map").is_visible()

    origin = urlsplit(demo.url).netloc
    outside = [r.url for r in requests if not r.url.startswith("data:") and urlsplit(r.url).netloc != origin]
    assert outside == [], outside
    archive = [r for r in requests if urlsplit(r.url).path == BASEMAP_PATH]
    assert archive, "the map did not read the basemap archive"
    assert all((r.headers.get("range") or "").startswith("bytes=") for r in archive)
    paths = {urlsplit(r.url).path for r in requests}
    assert "/console/static/vendor/leaflet/leaflet-src.esm.js" in paths
    assert "/console/static/vendor/pmtiles/pmtiles.js" in paths
    assert csp_errors == []
    await ctx.close()


async def test_map_in_english(browser: Any, demo: DemoServer) -> None:
    call_id = await call_of(demo, await watch_sos_away_from_home(demo, "map-browser-2"))
    ctx, page, _, csp_errors = await open_call(browser, demo, call_id, "en")
    text = await page.locator(".map-panel").inner_text()
    assert "Where help must go" in text and "-minute reach" in text and "Home" in text
    assert csp_errors == []
    await ctx.close()


async def _basemap_answers_ranges(demo: DemoServer) -> bool:
    import httpx

    async with httpx.AsyncClient() as c:
        r = await c.get(f"{demo.url}{BASEMAP_PATH}", headers={"Range": "bytes=0-126"})
    return r.status_code == 206 and r.content.startswith(b"PMTiles")

"""The console's server side through HTTP: the live stream (scope, catch-up, auth), the
call context, the station board, and the page with its catalogues."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.bus import MemoryBus
from device_gateway.models import DeviceState
from dispatcher.calls.models import Call
from dispatcher.calls.routing import RoutingConfig
from dispatcher.console import STATIC_DIR
from dispatcher.console.detail import age_on, reach_km, trend_points
from dispatcher.console.schemas import TrendPoint
from dispatcher.console.stream import StreamConfig
from dispatcher.registry.models import Contact
from tests.conftest import add_small_registry
from tests.support.api import api_world, token
from tests.support.events import store_event
from tests.support.registry import add_logins, add_second_street, staff_row

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


pytestmark = pytest.mark.usefixtures("cheap_argon2")


@pytest.fixture
async def world(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[dict[str, Any]]:
    await add_small_registry(maker, {"h1-btn": "button", "h1-bed": "mattress"})
    async with maker() as s, s.begin():
        await add_second_street(s)
        s.add_all(
            [
                staff_row("cm1-r1"),
                staff_row("cm1-r2"),
                staff_row("cm2-r1"),
                Contact(resident_id="r1", name="王小明", relation="儿子", phone="13900000002", priority=2),
                Contact(resident_id="r1", name="王小红", relation="女儿", phone="13900000001", priority=1),
                DeviceState(
                    device_id="h1-bed",
                    online=True,
                    last_seen_at=T0,
                    metrics={"hr": 72, "rr": 16, "presence": "in_bed"},
                    metrics_at=T0,
                ),
            ]
        )
        await add_logins(
            s,
            [
                ("op-cm1", "operator", "cm1"),
                ("op-cm2", "operator", "cm2"),
                ("op-county", "operator", "county"),
            ],
            now=T0,
        )
    async with api_world(
        maker,
        T0,
        # a stream lasts 2.5 s: a test opens a call while its streams are open, and on a
        # busy CI machine (heartbeats seen 1.4 s apart) 1 s ended a stream before the
        # call's frame, once, in a full suite
        stream_config=StreamConfig(heartbeat_s=0.05, max_stream_s=2.5, retry_ms=100),
        console_tile_url="http://tiles.local/{z}/{x}/{y}.png",
    ) as w:
        yield {"client": w.client, "dispatcher": w.dispatcher, "clock": w.clock, "bus": w.bus}


async def ticket(c: httpx.AsyncClient, tok: str) -> str:
    """A stream ticket for a bearer token (the stream does not take the token itself)."""
    r = await c.post("/api/v1/auth/stream-ticket", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    return str(r.json()["ticket"])


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Frames as {"event", "id", "data"}; comments and the retry line are dropped."""
    frames = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key in ("event", "id", "data"):
                fields[key] = value
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            frames.append(fields)
    return frames


async def streams_started(bus: MemoryBus) -> None:
    """Wait until the feed subscribed (the streams have begun), then for their snapshot."""
    for _ in range(200):
        if bus._subs.get("calls"):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.15)


def call_ids(frames: list[dict[str, Any]]) -> set[int]:
    """Every call id a stream mentioned, as a call or as gone."""
    ids: set[int] = set()
    for f in frames:
        if f["event"] in ("snapshot", "calls"):
            ids |= {c["id"] for c in f["data"]["calls"]} | set(f["data"].get("gone", []))
    return ids


async def open_call(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession], event_id: str = "e1"
) -> int:
    await store_event(maker, "h1-btn", event_id, "sos", T0)
    out = await world["dispatcher"].intake_once()
    assert out is not None
    async with maker() as s:
        from sqlalchemy import select

        from dispatcher.calls.models import Call

        return int(await s.scalar(select(Call.id).order_by(Call.id.desc()).limit(1)) or 0)


async def test_stream_sends_a_snapshot_then_changes_in_scope_only(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    own, stranger = await token(c, "op-cm1"), await token(c, "op-cm2")

    async def read(tik: str) -> list[dict[str, Any]]:
        r = await c.get("/api/v1/stream", params={"ticket": tik})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return parse_sse(r.text)

    # tickets first, so both streams open at once as the pages' would
    own, stranger = await ticket(c, own), await ticket(c, stranger)
    mine, theirs = asyncio.create_task(read(own)), asyncio.create_task(read(stranger))
    await streams_started(world["bus"])
    cid = await open_call(world, maker)
    own_frames, stranger_frames = await mine, await theirs

    assert own_frames[0]["event"] == "snapshot" and own_frames[0]["data"]["calls"] == []
    changes = [f for f in own_frames if f["event"] == "calls"]
    assert changes, own_frames
    call = changes[0]["data"]["calls"][0]
    assert call["id"] == cid and call["priority"] == "P1" and call["resident_name"] == "王秀英"
    assert call["resident"] == {"age": 86, "sex": "F", "capacity_level": 3, "living_alone": True}
    assert int(changes[0]["id"]) > int(own_frames[0]["id"])  # ids follow the audit log
    assert any(f["event"] == "ping" for f in own_frames)  # heartbeats while idle
    # the other station's operator never hears of it
    assert [f["event"] for f in stranger_frames if f["event"] != "ping"] == ["snapshot", "reconnect"]
    assert cid not in call_ids(stranger_frames)


async def test_stream_resumes_from_last_event_id(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    tok = await token(c, "op-cm1")
    first = parse_sse((await c.get("/api/v1/stream", params={"ticket": await ticket(c, tok)})).text)
    last_id = first[0]["id"]
    assert first[-1]["event"] == "reconnect"  # a stream ends on purpose, saying so
    cid = await open_call(world, maker)  # happens while the page is disconnected
    r = await c.get(
        "/api/v1/stream", params={"ticket": await ticket(c, tok)}, headers={"Last-Event-ID": last_id}
    )
    frames = parse_sse(r.text)
    assert frames[0]["event"] == "calls", "a resuming page gets what it missed, not a snapshot"
    assert [x["id"] for x in frames[0]["data"]["calls"]] == [cid]
    # the same through the query parameter (a new EventSource cannot set the header)
    frames = parse_sse(
        (
            await c.get("/api/v1/stream", params={"ticket": await ticket(c, tok), "last_event_id": last_id})
        ).text
    )
    assert frames[0]["event"] == "calls" and frames[0]["data"]["calls"][0]["id"] == cid
    # nothing missed since the newest id: an empty catch-up
    newest = frames[0]["id"]
    frames = parse_sse(
        (await c.get("/api/v1/stream", params={"ticket": await ticket(c, tok), "last_event_id": newest})).text
    )
    assert frames[0]["event"] == "calls" and frames[0]["data"]["calls"] == []


async def test_stream_reports_gone_only_for_calls_it_showed(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    cid = await open_call(world, maker)
    # the call went to the neighbouring community (as when the home's own has nobody)
    async with maker() as s, s.begin():
        await s.execute(update(Call).where(Call.id == cid).values(station_id="cm2"))
    neighbour, home_station = await token(c, "op-cm2"), await token(c, "op-cm1")
    county = await token(c, "op-county")

    async def read(tik: str) -> list[dict[str, Any]]:
        return parse_sse((await c.get("/api/v1/stream", params={"ticket": tik})).text)

    tickets = [await ticket(c, t) for t in (neighbour, home_station)]
    tasks = [asyncio.create_task(read(t)) for t in tickets]
    await streams_started(world["bus"])
    # the county moves the call out of the neighbour's subtree
    r = await c.post(
        f"/api/v1/calls/{cid}/escalate", headers={"Authorization": f"Bearer {county}"}, json={"to": "county"}
    )
    assert r.status_code == 200, r.text
    neighbour_frames, home_frames = await tasks[0], await tasks[1]
    assert neighbour_frames[0]["data"]["calls"][0]["id"] == cid
    gone = [f["data"]["gone"] for f in neighbour_frames if f["event"] == "calls"]
    assert [cid] in gone
    # the home's own station never had it before, so is never told it went; once
    # escalated, the call is theirs to see (dispatcher.calls.visibility)
    assert home_frames[0]["data"]["calls"] == []
    assert all(f["data"].get("gone", []) == [] for f in home_frames if f["event"] == "calls")
    assert cid in call_ids(home_frames)


async def test_stream_refuses_bad_tokens(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    assert (await c.get("/api/v1/stream", params={"ticket": "forged.token"})).status_code == 401
    assert (await c.get("/api/v1/stream")).status_code == 422
    # the bearer token itself no longer opens the stream, by either name
    tok = await token(c, "op-cm1")
    assert (await c.get("/api/v1/stream", params={"token": tok})).status_code == 422
    assert (await c.get("/api/v1/stream", params={"ticket": tok})).status_code == 401


async def test_call_context_has_what_the_detail_pane_shows(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    await store_event(maker, "h1-bed", "v1", "vital_alert", T0, data={"hr": 132, "rr": 30})
    cid = await open_call(world, maker)
    h = {"Authorization": f"Bearer {await token(c, 'op-cm1')}"}
    r = await c.get(f"/api/v1/console/calls/{cid}/context", headers=h)
    assert r.status_code == 200, r.text
    ctx = r.json()
    res = ctx["resident"]
    assert res["name"] == "王秀英" and res["capacity_level"] == 3 and res["living_alone"] is True
    assert res["conditions"] == ["高血压"]
    assert res["hr_range"] == [45, 120] and res["rr_range"] == [8, 28]  # level-3 defaults
    assert [x["name"] for x in res["contacts"]] == ["王小红", "王小明"]  # in calling order
    devices = {d["id"]: d for d in ctx["devices"]}
    assert devices["h1-btn"]["fired"] is True and devices["h1-bed"]["metrics"]["hr"] == 72
    assert devices["h1-btn"]["online"] is None  # never heard from: not claimed online
    assert [(p["hr"], p["rr"], p["source"]) for p in ctx["trend"]][-1] == (72.0, 16.0, "latest")
    assert any(p["hr"] == 132 for p in ctx["trend"])
    # only on-duty responders (the nurse is off duty), with their state
    assert [(x["staff_id"], x["state"]) for x in ctx["responders"]] == [("cm1-r1", "free")]
    m = ctx["map"]
    assert m["station_id"] == "cm1" and m["limit_min"] == 15
    assert m["reach_km"] == pytest.approx(15 * 20 / 60 / 1.3, abs=0.001)
    assert {s["id"] for s in m["stations"]} == {"cm1"}  # the community operator's whole scope
    county = {"Authorization": f"Bearer {await token(c, 'op-county')}"}
    m = (await c.get(f"/api/v1/console/calls/{cid}/context", headers=county)).json()["map"]
    assert {s["id"] for s in m["stations"]} == {"cm1", "st1"}  # the station and its parent
    # once sent, the responder shows as dispatched on this call
    assert (
        await c.post(f"/api/v1/calls/{cid}/dispatch", headers=h, json={"staff_ids": ["cm1-r1"]})
    ).status_code == 200
    ctx = (await c.get(f"/api/v1/console/calls/{cid}/context", headers=h)).json()
    assert [(x["staff_id"], x["state"], x["call_id"]) for x in ctx["responders"]] == [
        ("cm1-r1", "dispatched", cid)
    ]
    # another station's operator cannot learn the call exists
    other = {"Authorization": f"Bearer {await token(c, 'op-cm2')}"}
    assert (await c.get(f"/api/v1/console/calls/{cid}/context", headers=other)).status_code == 404
    assert (await c.get(f"/api/v1/console/calls/{cid}/context")).status_code == 401


async def test_board_counts_staff_and_calls_in_scope(
    world: dict[str, Any], maker: async_sessionmaker[AsyncSession]
) -> None:
    c: httpx.AsyncClient = world["client"]
    cid = await open_call(world, maker)
    h = {"Authorization": f"Bearer {await token(c, 'op-cm1')}"}
    assert (
        await c.post(f"/api/v1/calls/{cid}/dispatch", headers=h, json={"staff_ids": ["cm1-r1"]})
    ).status_code == 200
    rows = {r["id"]: r for r in (await c.get("/api/v1/console/board", headers=h)).json()}
    assert set(rows) == {"cm1"}
    assert rows["cm1"] | {} == {**rows["cm1"], "staff_on_duty": 1, "busy": 1, "free": 0, "open_calls": 1}
    county = {"Authorization": f"Bearer {await token(c, 'op-county')}"}
    rows = {r["id"]: r for r in (await c.get("/api/v1/console/board", headers=county)).json()}
    assert set(rows) == {"county", "st1", "cm1", "st2", "cm2"}
    assert (rows["cm2"]["staff_on_duty"], rows["cm2"]["free"], rows["cm2"]["open_calls"]) == (1, 1, 0)


async def test_me_names_station_time_zone_and_tile_url(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    me = (
        await c.get("/api/v1/console/me", headers={"Authorization": f"Bearer {await token(c, 'op-cm1')}"})
    ).json()
    assert me["station"]["id"] == "cm1" and me["timezone"] == "Asia/Shanghai" and me["role"] == "operator"
    assert "false_alarm" in me["outcomes"] and me["tile_url"] == "http://tiles.local/{z}/{x}/{y}.png"


async def test_console_page_and_assets_are_served_locally(world: dict[str, Any]) -> None:
    c: httpx.AsyncClient = world["client"]
    assert (await c.get("/", follow_redirects=False)).headers["location"] == "/console/"
    page = await c.get("/console/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(ref.startswith("/console/static/") or ref.startswith("#") for ref in refs)
    for ref in refs:
        if ref.startswith("/console/static/"):
            assert (await c.get(ref)).status_code == 200, ref
    for path in STATIC_DIR.rglob("*"):
        # vendored libraries (Leaflet, pmtiles) keep upstream's URLs in their comments and
        # docs; what they actually fetch is checked in the browser (test_map_browser.py)
        if path.suffix in (".js", ".css", ".html") and "vendor" not in path.relative_to(STATIC_DIR).parts:
            text = path.read_text(encoding="utf-8")
            assert not re.search(r"https?://(?!tiles\.)", text.replace("http://www.w3.org/2000/svg", "")), (
                path
            )
    r = await c.get("/console/static/app.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]


def test_catalogues_have_the_same_keys_and_cover_every_key_used() -> None:
    cats = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (STATIC_DIR / "i18n").glob("*.json")}
    assert set(cats) == {"zh-CN", "en"}
    assert set(cats["zh-CN"]) == set(cats["en"])
    assert all(v.strip() for cat in cats.values() for v in cat.values())
    used: set[str] = set()
    for path in [*STATIC_DIR.glob("*.js"), STATIC_DIR / "index.html"]:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r'\bt\("([a-z_.\-]+)"', text))
        used |= set(re.findall(r'data-i18n(?:-label)?="([a-z_.\-]+)"', text))
    assert len(used) > 80
    assert used <= set(cats["en"]), sorted(used - set(cats["en"]))
    # keys built at run time from server values must exist for every value
    from device_gateway.kinds import DeviceKind
    from dispatcher.audit.chain import AuditKind
    from dispatcher.calls.context import OUTCOMES
    from dispatcher.calls.models import CallStatus

    for prefix, values in (
        ("outcome", OUTCOMES),
        ("status", [s.value for s in CallStatus]),
        ("timeline", [k.value for k in AuditKind]),
        ("device", [k.value for k in DeviceKind]),
        ("tier", ["county", "street", "community"]),
        ("detail.capacity_level", [str(n) for n in range(5)]),
    ):
        missing = [v for v in values if f"{prefix}.{v}" not in cats["en"]]
        assert not missing, (prefix, missing)


def test_trend_keeps_readings_with_a_vital_in_time_order() -> None:
    early, late = datetime(2026, 1, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 2, tzinfo=UTC)
    pts = trend_points(
        [(late, {"hr": 130}), (early, {"rr": 9}), (early, {"smoke": True})],
        [(None, {"hr": 1}), (late.replace(hour=3), {"hr": 70, "rr": 14, "presence": "in_bed"})],
    )
    assert pts == [
        TrendPoint(at=early, hr=None, rr=9, source="event"),
        TrendPoint(at=late, hr=130, rr=None, source="event"),
        TrendPoint(at=late.replace(hour=3), hr=70, rr=14, source="latest"),
    ]
    assert trend_points([(early, {"hr": True})], []) == []  # a boolean is not a reading


def test_age_and_reach() -> None:
    assert age_on(date(1940, 3, 1), date(2026, 2, 28)) == 85
    assert age_on(date(1940, 3, 1), date(2026, 3, 1)) == 86
    cfg = RoutingConfig()
    assert reach_km(cfg, "urban") == pytest.approx(15 * 20 / 60 / 1.3)
    assert reach_km(cfg, "rural") == pytest.approx(30 * 40 / 60 / 1.3)


def test_static_dir_is_packaged() -> None:
    assert (STATIC_DIR / "index.html").is_file()
    assert Path(STATIC_DIR / "i18n" / "zh-CN.json").is_file()


def test_trend_merges_per_minute_history_events_and_latest() -> None:
    from datetime import UTC, datetime

    from dispatcher.console.detail import trend_points

    t0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    ms = int(t0.timestamp() * 1000)
    history: list[list[float | None]] = [
        [float(ms), 70.0, 15.0],
        [float(ms + 60_000), 72.0, None],
        [float(ms + 120_000), None, None],
    ]
    events = [(datetime(2026, 11, 26, 2, 1, 30, tzinfo=UTC), {"hr": 130, "rr": 28})]
    latest = [(datetime(2026, 11, 26, 2, 5, tzinfo=UTC), {"hr": 88, "presence": "in_bed"})]
    pts = trend_points(events, latest, history)
    assert [(p.source, p.hr, p.rr) for p in pts] == [
        ("telemetry", 70.0, 15.0),
        ("telemetry", 72.0, None),
        ("event", 130.0, 28.0),
        ("latest", 88.0, None),
    ]

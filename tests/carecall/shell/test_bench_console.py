"""The bench's console client (carecall/shell/bench_console.py): SSE frames parsed as the
console page's ``EventSource`` would, and a real stream read over HTTP from the platform's
web app, through the server's own end of each stream (``reconnect``) and resumed with a
fresh ticket and ``Last-Event-ID``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.shell.bench_console import SseConsole, SseFrame, SseParser, call_ids
from carecall.shell.bench_phases import sighting_ms
from carecall.shell.runtime import serve_http
from device_gateway.models import Device
from dispatcher.console.stream import StreamConfig
from dispatcher.registry.models import Home
from tests.conftest import add_small_registry
from tests.support.api import api_world
from tests.support.events import store_event
from tests.support.registry import PW, add_logins

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def frames(text: str) -> list[SseFrame]:
    p = SseParser()
    out = [p.feed(line) for line in text.split("\n")]
    return [f for f in out if f is not None]


def test_parser_reads_the_servers_frames() -> None:
    got = frames(
        "retry: 1000\n\n"
        'id: 7\nevent: snapshot\ndata: {"calls":[{"id":1},{"id":2}]}\n\n'
        ": a comment\n\n"
        'event: ping\ndata: {"at":"x"}\n\n'
        'id: 9\nevent: calls\ndata: {"calls":[{"id":3}],"gone":[1]}\n\n'
        "event: reconnect\ndata: {}\n\n"
    )
    assert [(f.event, f.id) for f in got] == [
        ("snapshot", "7"),
        ("ping", None),
        ("calls", "9"),
        ("reconnect", None),
    ]
    assert [call_ids(f) for f in got] == [[1, 2], [], [3], []]


def test_parser_joins_data_lines_and_ignores_what_is_not_a_call() -> None:
    (f,) = frames('event: calls\ndata: {"calls":\ndata: [{"id":5}]}\n\n')
    assert call_ids(f) == [5]
    assert call_ids(SseFrame("calls", "not json")) == []
    assert call_ids(SseFrame("calls", '{"calls": [{"id": "6"}, 7, {"id": 8}]}')) == [8]
    assert call_ids(SseFrame("snapshot", "[]")) == []


def test_sightings_pair_each_call_with_the_event_that_opened_it() -> None:
    opened = [("d1", "e1", 10), ("d2", "e2", 11), ("d3", "e3", 12)]
    sent = {("d1", "e1"): 1.0, ("d2", "e2"): 2.0, ("d3", "e3"): 3.0}
    ms, missing = sighting_ms(opened, sent, {10: 1.05, 11: 2.2})
    assert [round(x) for x in ms] == [50, 200] and missing == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("cheap_argon2")
async def test_console_reads_calls_across_the_servers_reconnects(
    maker: async_sessionmaker[AsyncSession],
) -> None:
    await add_small_registry(maker, {"h1-btn": "button"})
    async with maker() as s, s.begin():
        for i in (2, 3):
            s.add(Home(id=f"h{i}", station_id="cm1", address=f"建设路{i}号", lat=32.692, lon=112.852))
            await s.flush()
            s.add(
                Device(
                    id=f"h{i}-btn",
                    home_id=f"h{i}",
                    kind="button",
                    heartbeat_s=60,
                    enabled=True,
                    created_at=T0,
                )
            )
        await add_logins(s, [("op-county", "operator", "county")], now=T0)
    cfg = StreamConfig(heartbeat_s=0.05, max_stream_s=0.3, retry_ms=100)
    async with api_world(maker, T0, stream_config=cfg) as w:
        port, stop = _free_port(), asyncio.Event()
        server = asyncio.create_task(serve_http(w.app, "127.0.0.1", port, stop))
        console = SseConsole(f"http://127.0.0.1:{port}", "op-county", PW)
        try:
            for _ in range(100):  # until uvicorn listens
                with contextlib.suppress(OSError):
                    _r, wr = await asyncio.open_connection("127.0.0.1", port)
                    wr.close()
                    break
                await asyncio.sleep(0.05)
            await asyncio.to_thread(console.start, 10.0)
            assert console.snapshot() == {}  # no call yet: the opening snapshot was empty
            for home in ("h1", "h2", "h3"):
                await store_event(maker, f"{home}-btn", f"e-{home}", "sos", T0, home_id=home)
                assert await w.dispatcher.intake_once() is not None
                await asyncio.sleep(0.4)  # longer than a stream lives: the next call after a reopen
            seen: dict[int, float] = {}
            for _ in range(100):
                seen = console.snapshot()
                if len(seen) == 3:
                    break
                await asyncio.sleep(0.05)
            assert len(seen) == 3, console.stats()
            # first sight is kept: the same calls in later frames do not move it
            await store_event(maker, "h1-btn", "e-h1-again", "sos", T0)
            await w.dispatcher.intake_once()
            await asyncio.sleep(0.4)
            assert console.snapshot() == seen
            # the server ended its streams (max_stream_s), the client reopened each at once
            # and resumed from its last event id: one snapshot, then only catch-ups
            stats = console.stats()
            assert stats["streams"] >= 4 and stats["snapshots"] == 1, stats
            assert stats["errors"] == 0, stats
        finally:
            await asyncio.to_thread(console.close)
            stop.set()
            await server

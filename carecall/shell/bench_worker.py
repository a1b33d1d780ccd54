"""A platform process for the benchmark: the production Gateway / Dispatcher classes, run
exactly as ``carecall gateway`` / ``carecall dispatcher`` / ``carecall demo`` wire them,
plus a stats file the benchmark can read.

Why not measure the CLI processes from outside? Telemetry leaves no row per message, so
"sustained without loss" can only be counted by the gateway itself; and on the embedded
target the console push is an in-process MemoryBus, so only a subscriber inside the same
process sees it. The stats file (JSON, replaced atomically every 0.2 s and once more at
exit) carries the gateway's counters, and for the embedded target the monotonic time each
call id first reached a bus subscriber in the process (the bench's secondary "bus" figure;
CLOCK_MONOTONIC is system-wide on Linux, so the benchmark can subtract its own publish
times). The console figure itself comes from a real SSE client of the web app.

    python -m carecall.shell.bench_worker {embedded|gateway|dispatcher|serve} --stats FILE [...]

``serve`` is the web app alone, as ``carecall serve`` runs it (``run_serve``), on
CARECALL_HTTP_HOST:CARECALL_HTTP_PORT: the real target's console clients read its live
feed (carecall/shell/bench_console.py). ``embedded --http`` also serves the web app in the
embedded process, as ``carecall demo`` does (with the demo's stall monitor), so a console
client there is served by the same event loop as the broker, gateway and dispatcher.

Settings come from CARECALL_* like every other process. SIGTERM stops it after draining;
with ``--parent PID`` it also stops by itself once that process (the bench) is gone, so a
bench killed with SIGKILL leaves no gateway or dispatcher behind on the shared broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from carecall.core import heap
from carecall.core.logs import configure_logging
from carecall.core.metrics import REGISTRY
from carecall.core.priority import apply_nice, role_of
from carecall.shell.bench_acklog import AckLog, ack_log_path
from carecall.shell.runtime import (
    Core,
    Parts,
    embedded_broker,
    full_app,
    install_signal_handlers,
    open_core,
    run_serve,
    serve_http,
    settle_heap,
    stall_monitor,
    start_parts,
    watch,
)
from config.settings import Settings, load_settings
from device_gateway.lanes import Lane
from device_gateway.mqtt import MqttTarget
from device_gateway.service import Gateway
from dispatcher.health.state import DispatchHealth


def _shed(how: str) -> int:
    return int(REGISTRY.get_sample_value("carecall_gateway_readings_shed_total", {"how": how}) or 0)


class _Stats:
    def __init__(self, path: Path, role: str) -> None:
        self.path = path
        self.role = role
        self.gateway: Gateway | None = None
        self.console: dict[int, float] = {}
        self.console_messages = 0
        self.ready = False
        self.dispatcher_stats: Any = None
        self.ack_log = AckLog(ack_log_path(path))  # the gateway's share of each ack (bench_acklog)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "role": self.role,
            "pid": os.getpid(),
            "ready": self.ready,
            "t": time.monotonic(),
            # this process's collector pauses of 10 ms or more, with when each ended
            "gc_long": heap.PAUSES.recent(),
        }
        gw = self.gateway
        if gw is not None:
            out["gateway"] = {
                "messages": gw.stats.messages,
                # per channel, from the gateway's own Prometheus counter: the ingest figure
                # must count telemetry only, not echoed acks or status messages
                "telemetry": REGISTRY.get_sample_value(
                    "carecall_gateway_messages_total", {"channel": "telemetry"}
                )
                or 0,
                # readings merged or dropped under overload (device_gateway/shedding.py)
                "readings_merged": _shed("merged"),
                "readings_dropped": _shed("dropped"),
                "events_stored": gw.stats.events_stored,
                "events_duplicate": gw.stats.events_duplicate,
                "acks": gw.stats.acks,
                "rejected": gw.rejects.total,
                "queue": gw.writer.queue.qsize(),
                "acks_logged": self.ack_log.written,
                "connected": gw.connected.is_set(),
            }
        ds = self.dispatcher_stats
        if ds is not None:
            out["dispatcher"] = {
                "events": ds.events,
                "timers_fired": ds.timers_fired,
                "device_acks": ds.device_acks,
            }
        if self.role == "embedded":
            out["console"] = {"messages": self.console_messages, "first_seen": self.console}
        return out

    def write(self) -> None:
        if self.gateway is not None:
            self.ack_log.append(self.gateway.stats.ack_latencies_ms)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        os.replace(tmp, self.path)

    async def loop(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(0.2)


async def _console(core: Core, stats: _Stats) -> None:
    """A console client in the embedded process: the same bus push the browser gets."""
    async for msg in core.bus.subscribe("calls"):
        now = time.monotonic()
        stats.console_messages += 1
        for cid in msg.get("ids", []):
            if isinstance(cid, int) and cid not in stats.console:
                stats.console[cid] = now


async def watch_parent(parent: int, stop: asyncio.Event, every_s: float = 0.5) -> None:
    """Set ``stop`` once our parent is gone (we were re-parented)."""
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        await asyncio.sleep(every_s)


async def main_async(
    role: str,
    stats_path: Path,
    platform_password: str | None,
    parent: int | None = None,
    http: bool = False,
) -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    if role != "embedded":  # the CPU priority `carecall gateway`/`dispatcher`/`serve` take
        apply_nice(role_of(role, settings.gateway_lane), settings.cpu_priority)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    orphan = asyncio.create_task(watch_parent(parent, stop)) if parent is not None else None
    stats = _Stats(stats_path, role)
    if role == "serve":
        try:
            await _web_alone(settings, stats, stop)
        finally:
            if orphan is not None:
                orphan.cancel()
        return
    core = await open_core(settings)
    try:
        if role == "embedded":
            if not platform_password:
                raise SystemExit("embedded role needs --platform-password")
            host, port = settings.embedded_mqtt_host, settings.embedded_mqtt_port
            async with embedded_broker(core, host=host, port=port, password=platform_password) as target:
                await _serve(core, role, target, None, stats, stop, http)
        else:
            if settings.mqtt_url is None:
                raise SystemExit("gateway/dispatcher roles need CARECALL_MQTT_URL")
            target = MqttTarget.from_url(settings.mqtt_url)
            await _serve(core, role, target, settings.mqtt_shared_group, stats, stop)
    finally:
        if orphan is not None:
            orphan.cancel()
        await core.close()


async def listening(host: str, port: int, server: asyncio.Task[None], timeout_s: float = 60.0) -> None:
    """Return once ``host:port`` takes connections; raise if ``server`` ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.done():
            await server  # its exception, or: it stopped before it ever listened
            raise RuntimeError(f"the web server stopped before listening on {host}:{port}")
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise TimeoutError(f"the web server did not listen on {host}:{port} within {timeout_s:g} s")


async def _web_alone(settings: Settings, stats: _Stats, stop: asyncio.Event) -> None:
    """``carecall serve``: the web app as ``run_serve`` runs it, ready once it listens."""
    writer = asyncio.create_task(stats.loop())
    server = asyncio.create_task(run_serve(settings, stop, settings.http_host, settings.http_port))
    try:
        await listening(settings.http_host, settings.http_port, server)
        stats.ready = True
        await server
    finally:
        stop.set()
        writer.cancel()
        await asyncio.gather(server, writer, return_exceptions=True)
        stats.write()


def _web_in_process(core: Core, parts: Parts, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The web app and the stall monitor in this process, wired as ``carecall demo``."""
    health = DispatchHealth(ready=True)
    gw, dsp = parts.gateway, parts.dispatcher
    app = full_app(core, mqtt_connected=gw.connected.is_set if gw is not None else None, health=health)
    st = core.settings
    monitor = stall_monitor(
        core, f"bench-{st.instance}", health, (lambda: dsp.heartbeats) if dsp is not None else None
    )
    return [
        asyncio.create_task(serve_http(app, st.http_host, st.http_port, stop), name="bench-http"),
        asyncio.create_task(watch(monitor, stop), name="bench-stall-monitor"),
    ]


async def _serve(
    core: Core,
    role: str,
    target: MqttTarget,
    shared: str | None,
    stats: _Stats,
    stop: asyncio.Event,
    http: bool = False,
) -> None:
    """The role's parts, wired as the demo and ``carecall gateway``/``dispatcher`` wire
    them (``start_parts``), until SIGTERM; the stats file is written to the end. With
    ``http`` (embedded) the web app too, ready once it listens."""
    writer = asyncio.create_task(stats.loop())
    console: asyncio.Task[None] | None = None
    parts: Parts | None = None
    web: list[asyncio.Task[None]] = []
    try:
        parts = await start_parts(
            core,
            target,
            gateway=role in ("embedded", "gateway"),
            dispatcher=role in ("embedded", "dispatcher"),
            shared_group=shared,
            telemetry_qos=int(os.environ.get("CARECALL_BENCH_TELEMETRY_QOS", "0")),
            lane=Lane(core.settings.gateway_lane) if role == "gateway" else Lane.all,
        )
        stats.gateway = parts.gateway
        stats.dispatcher_stats = parts.dispatcher.stats if parts.dispatcher is not None else None
        console = asyncio.create_task(_console(core, stats)) if role == "embedded" else None
        if http:
            web = _web_in_process(core, parts, stop)
            await listening(core.settings.http_host, core.settings.http_port, web[0])
        await asyncio.sleep(0.3)  # subscriptions settle before anyone is told we are ready
        # as `carecall gateway`/`dispatcher`/`demo` do once up (carecall/core/heap.py)
        settle_heap(core.settings, role if role == "embedded" else role_of(role, core.settings.gateway_lane))
        stats.ready = True
        await stop.wait()
        if console is not None:
            console.cancel()
        failures = await parts.close()
        failures += [
            r for r in await asyncio.gather(*web, return_exceptions=True) if isinstance(r, Exception)
        ]
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        if failures:
            raise failures[0]
    finally:
        stop.set()
        for t in (writer, console, *web, *(parts.tasks if parts is not None else ())):
            if t is not None:
                t.cancel()
        await asyncio.gather(*web, *(parts.tasks if parts is not None else ()), return_exceptions=True)
        stats.write()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["embedded", "gateway", "dispatcher", "serve"])
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--platform-password", default=os.environ.get("CARECALL_BENCH_PLATFORM_PASSWORD"))
    parser.add_argument("--parent", type=int, default=None, help="stop once this process is gone")
    parser.add_argument(
        "--http", action="store_true", help="embedded: serve the web app on CARECALL_HTTP_HOST:PORT too"
    )
    args = parser.parse_args()
    asyncio.run(main_async(args.role, args.stats, args.platform_password, args.parent, args.http))


if __name__ == "__main__":
    main()

"""What ``carecall bench`` runs against (carecall/shell/bench.py drives it): the platform
processes it starts (carecall/shell/bench_worker.py) on the embedded target (amqtt +
SQLite + in-memory bus, one process) or the real one (Mosquitto + PostgreSQL + Redis on
127.0.0.1, gateways and dispatchers in separate processes), the fleet registered for them,
and the CPU and memory they use. Every process started is stopped (SIGTERM, then
SIGKILL), every database created is dropped, and the real target's retained messages are
cleared from the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from carecall.shell.bench_broker import bench_broker, forget_sessions
from carecall.shell.bench_compare import dispatcher_loops_of
from carecall.shell.bench_console import BusConsole, Consoles, WebConsole
from carecall.shell.bench_retained import clear_run_retained, run_device_ids
from carecall.shell.fleet_registry import Fleet, provision_fleet

PG_ADMIN_URL = os.environ.get("CARECALL_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = "redis://127.0.0.1:6379/0"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    quick: bool = False
    targets: tuple[str, ...] = ("embedded",)
    gateways: int = 1
    dispatchers: int = 1
    # real target: "all" (one gateway process per copy) or "split" (an events and a
    # readings process per copy, carecall gateway --lane; device_gateway/lanes.py)
    gateway_lanes: str = "all"
    # real target: "all" (every copy runs every loop) or "split" (bench_compare.dispatcher_loops_of)
    dispatcher_lanes: str = "all"
    broker: str = "machine"  # real target: the machine's Mosquitto or an own one (bench_broker)
    # real target: the processes' CPU priority, CARECALL_CPU_PRIORITY (carecall/core/priority.py):
    # "auto" as `carecall gateway`/`dispatcher`/`serve` run by default, "off" all equal
    priorities: str = "auto"
    homes: int = 2_000
    phases: tuple[str, ...] = ("quiet", "contended", "flood")

    @property
    def repeats(self) -> int:
        # a full run quotes the median of 3; --quick trades that for finishing in a minute
        return 1 if self.quick else 3

    @property
    def baseline_messages(self) -> int:
        return 5_000 if self.quick else 30_000

    @property
    def latency_s(self) -> float:
        return 1.0 if self.quick else 5.0

    @property
    def ingest_step_s(self) -> float:
        return 2.0 if self.quick else 4.0

    @property
    def alarm_s(self) -> float:
        return 4.0 if self.quick else 20.0

    @property
    def storm(self) -> tuple[int, float]:
        """(events, seconds): the issue's storm is 5,000 in 10 s; --quick keeps the rate."""
        return (1_000, 2.0) if self.quick else (5_000, 10.0)

    @property
    def hog_limit_s(self) -> float:
        """The contended phase's CPU hog stops itself after this, whatever happens: longer
        than the phase's alarm path and storm with their waits, never unbounded."""
        return 90.0 if self.quick else 400.0

    @property
    def flood_s(self) -> float:
        """Length of each flood leg (quiet, then junk) at ``flood_junk_per_s``."""
        return 2.0 if self.quick else 10.0

    @property
    def lane_alarm_s(self) -> float:
        """The contended phase's alarm path: --quick halves the quiet one (same rates)."""
        return self.alarm_s / 2 if self.quick else self.alarm_s

    @property
    def lane_storm(self) -> tuple[int, float]:
        """The contended phase's storm: --quick halves the quiet one (same rate)."""
        n, secs = self.storm
        return (n // 2, secs / 2) if self.quick else (n, secs)

    @property
    def lane_wait_s(self) -> float | None:
        """--quick: the contended and flood phases wait at most this for acks and routing
        (they are crash and correctness checks there, bounded to keep the run short);
        None: the quiet phase's waits."""
        return 5.0 if self.quick else None

    @property
    def flood_junk_per_s(self) -> float:
        return 1_000.0

    @property
    def flood_alarms_per_s(self) -> float:
        return 50.0

    # ------------------------------------------------------------------ copy-kill

    @property
    def real_gateways(self) -> int:
        """Gateway copies the real target starts: the copy-kill phase needs two."""
        return max(self.gateways, 2) if "copy-kill" in self.phases else self.gateways

    @property
    def real_dispatchers(self) -> int:
        return max(self.dispatchers, 2) if "copy-kill" in self.phases else self.dispatchers

    @property
    def copykill_rate(self) -> float:
        """Alarms a second in each copy-kill leg, one per device (each opens a call): a rate
        a busy shared 2-core machine keeps up with before the kill (50/s with 2,000
        telemetry/s behind did not, at load 11: the pre-kill window was already seconds
        behind, so the kill could not be judged), so the figures show the kill."""
        return 20.0

    @property
    def copykill_telemetry_per_s(self) -> float:
        """Readings behind the gateway leg's alarms, so the copy killed is busy when it dies."""
        return 200.0 if self.quick else 500.0

    @property
    def copykill_leg_s(self) -> float:
        return 6.0 if self.quick else 30.0

    @property
    def copykill_kill_at(self) -> float:
        """The fraction of a leg's stream after which the copy is SIGKILLed."""
        return 0.5

    @property
    def copykill_alarms(self) -> int:
        return int(self.copykill_rate * self.copykill_leg_s) + 1

    @property
    def copykill_wait_s(self) -> float:
        """The longest the phase waits for acks, ``assigned`` and timers after a stream."""
        return 10.0 if self.quick else 30.0

    @property
    def copykill_timer_window_s(self) -> float:
        """Timers of the killed dispatcher copy's calls due this long after its death are
        judged: long enough for the reminder config/escalation.yaml schedules 20 s after a
        call opens, of every call the copy opened before it died."""
        return 21.0 if self.quick else 25.0

    @property
    def copykill_goal_ms(self) -> float:
        return 5_000.0


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    stats_path: Path
    log_path: Path
    instance: str = ""  # its CARECALL_INSTANCE (a dispatcher copy is named from it)

    def stats(self) -> dict[str, Any]:
        try:
            data = json.loads(self.stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_worker(
    role: str, name: str, env: dict[str, str], workdir: Path, args: tuple[str, ...] = ()
) -> Worker:
    stats_path = workdir / f"{name}.stats.json"
    log_path = workdir / f"{name}.log"
    full_env = dict(os.environ)
    full_env.update(env)
    full_env.setdefault("CARECALL_LOG_LEVEL", "WARNING")
    with log_path.open("ab") as fh:
        proc = subprocess.Popen(
            # --parent: the worker stops by itself once the bench is gone (even SIGKILLed)
            [
                sys.executable,
                "-m",
                "carecall.shell.bench_worker",
                role,
                "--stats",
                str(stats_path),
                "--parent",
                str(os.getpid()),
                *args,
            ],
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    return Worker(name, proc, stats_path, log_path, env.get("CARECALL_INSTANCE", ""))


def nice_of(workers: list[Worker]) -> str:
    """Each worker's nice value as the kernel has it (a raise may have been refused)."""
    out = []
    for w in workers:
        try:
            out.append(f"{w.name} {os.getpriority(os.PRIO_PROCESS, w.proc.pid):+d}")
        except OSError:
            out.append(f"{w.name} ?")
    return ", ".join(out)


def wait_ready(workers: list[Worker], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for w in workers:
            if w.proc.poll() is not None:
                tail = w.log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RuntimeError(f"bench worker {w.name} exited with {w.proc.returncode}:\n{tail}")
        if all(w.stats().get("ready") for w in workers):
            return
        time.sleep(0.1)
    raise TimeoutError("bench workers did not become ready in time")


def gateway_messages(workers: list[Worker]) -> int:
    return sum(int(w.stats().get("gateway", {}).get("telemetry", 0)) for w in workers)


# --------------------------------------------------------------------------- CPU / memory


def service_pids() -> dict[str, list[int]]:
    """PIDs of the system services on this machine (Mosquitto, PostgreSQL, Redis)."""
    found: dict[str, list[int]] = {"mosquitto": [], "postgres": [], "redis": []}
    for p in psutil.process_iter(["name", "pid"]):
        name = (p.info.get("name") or "").lower()
        for key in found:
            if name.startswith(key):
                found[key].append(int(p.info["pid"]))
    return found


@dataclass
class Target:
    name: str
    host: str
    port: int
    loadgen_creds: tuple[str | None, str | None]
    observer_creds: tuple[str | None, str | None]
    db_url: str
    gateways: list[Worker]
    workers: list[Worker]
    console: Callable[[], dict[int, float]]
    fleet: Fleet
    notes: list[str] = field(default_factory=list)
    # fresh homes for the phases that follow the quiet one (issue 15), so their alarms open
    # calls of their own instead of joining the quiet phase's still-open ones
    fleets: dict[str, Fleet] = field(default_factory=dict)
    # ``console`` is a real SSE client of the web app (carecall/shell/bench_console.py);
    # ``bus`` the first sight of a call id on the push it relays (the older figure)
    console_via: str = ""
    bus: Callable[[], dict[int, float]] | None = None
    bus_via: str = ""
    console_stats: Callable[[], dict[str, Any]] | None = None  # streams opened, errors …


# --------------------------------------------------------------------------- targets


@contextlib.contextmanager
def embedded_target(cfg: BenchConfig, workdir: Path, say: Progress) -> Iterator[Target]:
    from carecall.core.db import make_engine, make_sessionmaker
    from carecall.core.migrate import upgrade
    from carecall.shell.runtime import PLATFORM_USER

    db_url = f"sqlite:///{workdir}/bench.db"
    upgrade(db_url)
    fleet = _provision(db_url, cfg.homes, make_engine, make_sessionmaker)
    fleets = _phase_fleets(db_url, cfg, make_engine, make_sessionmaker)
    web = WebConsole.for_fleet(db_url, fleet)
    port = free_port()
    password = secrets.token_urlsafe(18)
    env = {
        "CARECALL_DATABASE_URL": db_url,
        "CARECALL_EMBEDDED_MQTT_PORT": str(port),
        "CARECALL_BENCH_PLATFORM_PASSWORD": password,
        "CARECALL_INSTANCE": "bench-embedded",
        **web.env,
    }
    env.pop("CARECALL_MQTT_URL", None)
    # --http: the embedded process serves the web app too, as `carecall demo` does
    worker = start_worker("embedded", "embedded", env, workdir, ("--http",))
    consoles = Consoles()
    try:
        wait_ready([worker])
        consoles.sse = sse = web.connect()
        say(
            f"embedded target up: amqtt on 127.0.0.1:{port}, SQLite, in-memory bus, web app on "
            f"{web.url} (pid {worker.proc.pid}); console: {web.via}"
        )

        def bus() -> dict[int, float]:
            seen = worker.stats().get("console", {}).get("first_seen", {})
            return {int(k): float(v) for k, v in seen.items()}

        yield Target(
            name="embedded",
            host="127.0.0.1",
            port=port,
            loadgen_creds=(fleet.loadgen_id, fleet.loadgen_secret),
            observer_creds=(PLATFORM_USER, password),
            db_url=db_url,
            gateways=[worker],
            workers=[worker],
            console=sse.snapshot,
            fleet=fleet,
            fleets=fleets,
            console_via=web.via,
            console_stats=sse.stats,
            bus=bus,
            bus_via="in-process bus subscriber",
        )
    finally:
        consoles.close()
        worker.stop()


def _provision(
    db_url: str,
    homes: int,
    make_engine: Any,
    make_sessionmaker: Any,
    prefix: str = "bench",
    with_secrets: bool = False,
) -> Fleet:
    async def go() -> Fleet:
        engine = make_engine(db_url)
        try:
            return await provision_fleet(
                make_sessionmaker(engine), homes, prefix=prefix, with_secrets=with_secrets
            )
        finally:
            await engine.dispose()

    return asyncio.run(go())


def phase_fleet_sizes(cfg: BenchConfig) -> dict[str, int]:
    """Homes registered up front for the contended and flood phases (before the platform
    starts, like the main fleet): the contended phase re-runs the alarm path and storm,
    the flood phase needs the flooding device plus one home per alarm of its two legs."""
    sizes: dict[str, int] = {}
    if "contended" in cfg.phases:
        sizes["contended"] = cfg.homes
    if "flood" in cfg.phases:
        sizes["flood"] = 1 + 2 * round(cfg.flood_alarms_per_s * cfg.flood_s)
    if "copy-kill" in cfg.phases and "real" in cfg.targets:
        sizes["copy-kill"] = 2 * cfg.copykill_alarms  # a gateway leg and a dispatcher leg
    return sizes


def _phase_fleets(
    db_url: str, cfg: BenchConfig, make_engine: Any, make_sessionmaker: Any, run: str = ""
) -> dict[str, Fleet]:
    # the flood's devices get secrets: the flooding one connects as itself, like a device
    return {
        phase: _provision(
            db_url,
            n,
            make_engine,
            make_sessionmaker,
            prefix=f"bench{run}{phase[0]}{'k' if phase == 'copy-kill' else ''}",
            with_secrets=phase == "flood",
        )
        for phase, n in phase_fleet_sizes(cfg).items()
    }


def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql://", "postgres://"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


@contextlib.contextmanager
def real_target(cfg: BenchConfig, workdir: Path, say: Progress) -> Iterator[Target]:
    from carecall.core.db import make_engine, make_sessionmaker
    from carecall.core.migrate import upgrade

    stack = contextlib.ExitStack()
    mq = stack.enter_context(bench_broker(cfg.broker, workdir))
    missing = [
        n
        for n, a in (
            ("Mosquitto", mq),
            ("PostgreSQL", ("127.0.0.1", 5432)),
            ("Redis", ("127.0.0.1", 6379)),
        )
        if not reachable(a)
    ]
    if missing:
        stack.close()
        raise RuntimeError(f"--target real needs {', '.join(missing)} on 127.0.0.1")
    name = f"carecall_bench_{secrets.token_hex(4)}"
    _admin(f'CREATE DATABASE "{name}"')
    db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    workers: list[Worker] = []
    instances: list[str] = []
    run_ids: list[str] = []
    console: Consoles | None = None
    try:
        upgrade(db_url)
        # Device ids of this run only: the broker is shared, and every real target's
        # gateways take every device's messages. With the same ids in two runs at once (two
        # benches, or a bench and a test), each platform stored and routed the other's
        # alarms as its own (a copy-kill leg's alarms queued behind another bench's storm);
        # with ids of its own, a foreign device is unknown: counted, refused, not answered.
        run = secrets.token_hex(2)
        fleet = _provision(db_url, cfg.homes, make_engine, make_sessionmaker, prefix=f"bench{run}")
        fleets = _phase_fleets(db_url, cfg, make_engine, make_sessionmaker, run)
        run_ids = run_device_ids(fleet, fleets)
        web = WebConsole.for_fleet(db_url, fleet)
        group = f"bench-{secrets.token_hex(3)}"
        base_env = {
            "CARECALL_DATABASE_URL": db_url,
            "CARECALL_REDIS_URL": REDIS_URL,
            "CARECALL_MQTT_URL": f"mqtt://{mq[0]}:{mq[1]}",
            "CARECALL_MQTT_SHARED_GROUP": group,
            "CARECALL_SECRET_KEY": web.env["CARECALL_SECRET_KEY"],  # one key for every copy
            "CARECALL_CPU_PRIORITY": cfg.priorities,
        }
        gws = []
        lanes = ("events", "readings") if cfg.gateway_lanes == "split" else ("all",)
        for i in range(cfg.real_gateways):
            inst = f"bench-gw{i}-{secrets.token_hex(2)}"
            for lane in lanes:
                suffix = "" if lane == "all" else f"-{lane}"
                instances.append(f"carecall-gateway-{inst}{suffix}")
                env = {**base_env, "CARECALL_INSTANCE": inst, "CARECALL_GATEWAY_LANE": lane}
                gws.append(start_worker("gateway", f"gateway{i}{suffix}", env, workdir))
        loops = dispatcher_loops_of(cfg.dispatcher_lanes, cfg.real_dispatchers, cfg.phases)
        dsps = [
            # unique per run: a dispatcher's broker client id is made from it
            start_worker(
                "dispatcher",
                f"dispatcher{i}",
                {
                    **base_env,
                    "CARECALL_INSTANCE": f"bench-d{i}-{secrets.token_hex(2)}",
                    "CARECALL_DISPATCHER_LOOPS": lp,
                },
                workdir,
            )
            for i, lp in enumerate(loops)
        ]
        # the web app alone, as `carecall serve` runs it: the console's SSE feed comes from it
        env = {**base_env, **web.env, "CARECALL_INSTANCE": f"bench-web-{secrets.token_hex(2)}"}
        workers = [*gws, *dsps, start_worker("serve", "web", env, workdir)]
        wait_ready(workers)
        console = Consoles(bus=BusConsole(REDIS_URL))
        console.sse = sse = web.connect()
        say(
            f"real target up: Mosquitto {mq[0]}:{mq[1]} ({cfg.broker}), PostgreSQL {name}, Redis; "
            f"{cfg.real_gateways} gateway(s) ({cfg.gateway_lanes} lanes), {cfg.real_dispatchers} "
            f"dispatcher(s) ({', '.join(loops)}), 1 web server on {web.url} (pids {', '.join(str(w.proc.pid) for w in workers)}; "
            f"CPU priority {cfg.priorities}: {nice_of(workers)}); "
            f"console: {web.via}"
        )
        split = (
            (", split lanes" if cfg.gateway_lanes == "split" else "")
            + (", intake apart" if cfg.dispatcher_lanes == "split" else "")
            + (", own broker" if cfg.broker == "own" else "")
            + (", equal priorities" if cfg.priorities == "off" else "")
        )
        yield Target(
            name=f"real ({cfg.real_gateways} gw{split}, {cfg.real_dispatchers} dsp)",
            host=mq[0],
            port=mq[1],
            loadgen_creds=(None, None),
            observer_creds=(None, None),
            db_url=db_url,
            gateways=gws,
            workers=workers,
            console=sse.snapshot,
            fleet=fleet,
            fleets=fleets,
            console_via=web.via,
            console_stats=sse.stats,
            bus=console.bus.snapshot if console.bus is not None else None,
            bus_via="Redis carecall:calls subscriber",
        )
    finally:
        if console is not None:
            console.close()
        for w in workers:
            w.stop()
        forget_sessions(mq, instances)
        with contextlib.suppress(Exception):
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if run_ids:  # last, the gateways gone: none answers a status with a config any more
            clear_run_retained(mq[0], mq[1], run_ids, say)
        stack.close()

"""``carecall bench``: the benchmark's command line (carecall/shell/bench.py runs it)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from carecall.shell.bench import render, run_bench
from carecall.shell.bench_broker import BROKERS
from carecall.shell.bench_compare import (
    DEFAULT_PHASES,
    check_phases_for_targets,
    dispatcher_loops_of,
    parse_phases,
)
from carecall.shell.bench_targets import BenchConfig


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def bench_command(
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Shorter phases: a crash and correctness check, not figures to quote (no target is judged).",
        ),
    ] = False,
    target: Annotated[
        str,
        typer.Option(
            help="embedded (amqtt + SQLite + in-memory bus, one process), real (Mosquitto + "
            "PostgreSQL + Redis on 127.0.0.1), or all."
        ),
    ] = "embedded",
    gateways: Annotated[
        int, typer.Option(help="Gateway copies (real target; at least 2 with copy-kill).", min=1, max=8)
    ] = 1,
    dispatchers: Annotated[
        int, typer.Option(help="Dispatcher copies (real target; at least 2 with copy-kill).", min=1, max=8)
    ] = 1,
    gateway_lanes: Annotated[
        str,
        typer.Option(
            help="Real target: all (each gateway copy one process) or split (each copy an "
            "events process and a readings process: carecall gateway --lane)."
        ),
    ] = "all",
    dispatcher_lanes: Annotated[
        str,
        typer.Option(
            help="Real target: all (every dispatcher copy runs every loop) or split (with "
            "--dispatchers 2 or more: the first copy runs the intake alone, the alarm lane, "
            "the others the timers, outbox and the rest: carecall dispatcher --loops)."
        ),
    ] = "all",
    broker: Annotated[
        str,
        typer.Option(
            help="Real target: machine (the Mosquitto on 127.0.0.1:1883, as installed) or own "
            "(a Mosquitto the bench starts with the settings CareCall deploys, carecall "
            "broker-config's: no Nagle delay, a deep queue per session)."
        ),
    ] = "machine",
    priorities: Annotated[
        str,
        typer.Option(
            help="Real target: the platform processes' CPU priority (CARECALL_CPU_PRIORITY): "
            "auto (as carecall gateway/dispatcher/serve run by default: the events lane nice "
            "-10, dispatcher and web -5, readings +10; raises need root or CAP_SYS_NICE, the "
            "start line prints what each got) or off (all as the bench runs)."
        ),
    ] = "auto",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Write every figure and verdict as JSON here.")
    ] = None,
    phases: Annotated[
        str,
        typer.Option(
            help="Comma-separated: quiet (alarm path, storm, timers), contended (the alarm "
            "path and storm with one core held by a CPU loop, and the timers of those calls "
            "due meanwhile), flood (other devices' alarms during one "
            "device's 1,000 malformed messages/s), copy-kill (real target only: SIGKILL of one "
            "of two dispatcher copies, then of one of two gateway copies, mid-stream; the "
            "longest alarm wait and the dead copy's timers, before vs after). The baseline "
            "always runs, the ingest ramp unless copy-kill is the only phase."
        ),
    ] = ",".join(DEFAULT_PHASES),
) -> None:
    """Measure throughput and latency on this machine against a same-run baseline (raw
    paho → broker → paho): ingest, alarm acks, storm, event → call on a console (a real
    SSE client of the web app, signed in as a county operator), timers, CPU/memory.
    Targets only 127.0.0.1; bounded; prints issue 15's targets with each figure, its ratio
    to the baseline and met / MISSED / not judged (a --quick run judges none)."""
    if target not in ("embedded", "real", "all"):
        raise typer.BadParameter("--target must be embedded, real or all")
    targets = ("embedded", "real") if target == "all" else (target,)
    if gateway_lanes not in ("all", "split"):
        raise typer.BadParameter("--gateway-lanes must be all or split")
    if priorities not in ("auto", "off"):
        raise typer.BadParameter("--priorities must be auto or off")
    if broker not in BROKERS:
        raise typer.BadParameter("--broker must be machine or own")
    try:
        selected = parse_phases(phases)
        check_phases_for_targets(targets, selected)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--phases") from exc
    try:
        dispatcher_loops_of(dispatcher_lanes, dispatchers, selected)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dispatcher-lanes") from exc
    cfg = BenchConfig(
        quick=quick,
        targets=targets,
        gateways=gateways,
        dispatchers=dispatchers,
        phases=selected,
        gateway_lanes=gateway_lanes,
        dispatcher_lanes=dispatcher_lanes,
        broker=broker,
        priorities=priorities,
    )
    t0 = time.monotonic()

    def say(line: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - t0:6.1f}s] {line}\n")
        sys.stderr.flush()

    # SIGTERM (a CI job's timeout, `kill`) unwinds like Ctrl-C, so every process the bench
    # started (platform workers, the contended phase's CPU hog) is stopped on the way out
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        result = run_bench(cfg, say)
    except (RuntimeError, TimeoutError) as exc:
        sys.stderr.write(f"carecall bench: {exc}\n")
        raise typer.Exit(2) from exc
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(render(result))
    typer.echo(f"\nfinished in {result['seconds']} s")
    if json_file is not None:
        json_file.write_text(json.dumps(result, indent=2), encoding="utf-8")
        typer.echo(f"JSON written to {json_file}")

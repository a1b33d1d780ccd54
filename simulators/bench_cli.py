"""The ``carecall bench`` command (registered by dispatcher/cli.py as
``app.command("bench")(bench_command)``); kept here so the CLI module stays a thin index."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from simulators.bench import BenchConfig, render, run_bench


def bench_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="Shorter phases; finishes in under a minute.")
    ] = False,
    target: Annotated[
        str,
        typer.Option(
            help="embedded (amqtt + SQLite + in-memory bus, one process), real (Mosquitto + "
            "PostgreSQL + Redis on 127.0.0.1), or all."
        ),
    ] = "embedded",
    gateways: Annotated[int, typer.Option(help="Gateway copies (real target).", min=1, max=8)] = 1,
    dispatchers: Annotated[int, typer.Option(help="Dispatcher copies (real target).", min=1, max=8)] = 1,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write every figure as JSON here.")] = None,
) -> None:
    """Measure throughput and latency on this machine against a same-run baseline (raw
    paho → broker → paho): ingest, alarm acks, storm, console push, timers, CPU/memory.
    Targets only 127.0.0.1; bounded; prints a table marking missed targets."""
    if target not in ("embedded", "real", "all"):
        raise typer.BadParameter("--target must be embedded, real or all")
    targets = ("embedded", "real") if target == "all" else (target,)
    cfg = BenchConfig(quick=quick, targets=targets, gateways=gateways, dispatchers=dispatchers)
    t0 = time.monotonic()

    def say(line: str) -> None:
        sys.stderr.write(f"[{time.monotonic() - t0:6.1f}s] {line}\n")
        sys.stderr.flush()

    try:
        result = run_bench(cfg, say)
    except (RuntimeError, TimeoutError) as exc:
        sys.stderr.write(f"carecall bench: {exc}\n")
        raise typer.Exit(2) from exc
    typer.echo(render(result))
    typer.echo(f"\nfinished in {result['seconds']} s")
    if json_file is not None:
        json_file.write_text(json.dumps(result, indent=2), encoding="utf-8")
        typer.echo(f"JSON written to {json_file}")

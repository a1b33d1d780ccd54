"""``carecall demo`` / ``gateway`` / ``serve`` / ``dispatcher``: the platform's processes."""

from __future__ import annotations

from typing import Annotated

import typer

from carecall.core.priority import apply_nice, role_of
from carecall.shell.cli.common import fail, run, settings_from, until_signal


def demo(
    speed: Annotated[
        float, typer.Option(help="Simulated time runs N times faster (demo/test only).", min=0.01, max=10000)
    ] = 1.0,
    no_sim: Annotated[
        bool, typer.Option("--no-sim", help="Load the demo county but run no simulated devices.")
    ] = False,
    port: Annotated[int, typer.Option(help="HTTP port of the web server.")] = 8000,
    mqtt_port: Annotated[int, typer.Option(help="Port of the embedded MQTT broker.")] = 1884,
    scenario: Annotated[
        str, typer.Option(help="Simulation scenario: a name (normal, quiet, storm) or a YAML file.")
    ] = "normal",
    history_days: Annotated[
        float,
        typer.Option(
            help="Start the clock D days ago and fill that history at ×--speed (with simulated "
            "operators answering the calls), then go on at ×1. 0: no history. A second run "
            "resumes where the record ends.",
            min=0,
            max=366,
        ),
    ] = 0.0,
    operators: Annotated[
        str,
        typer.Option(
            help="When simulated operators and responders answer the calls: history (while "
            "filling history), always, or never."
        ),
    ] = "history",
) -> None:
    """Everything in one process on embedded defaults: MQTT broker, gateway, web server,
    SQLite, and simulated homes of the bundled demo county (loaded on first run)."""
    from carecall.shell.demo import run_demo

    if operators not in ("history", "always", "never"):
        fail("--operators must be history, always or never")
    if history_days > 0 and speed < 10:
        fail("--history-days needs --speed of at least 10 (a month at ×5,000 takes about 10 minutes)")
    s = settings_from(speed=speed, http_port=port, embedded_mqtt_port=mqtt_port, mqtt_url=None)
    if s.mqtt_url is not None:
        fail("demo runs its own embedded broker; unset CARECALL_MQTT_URL")
    run(
        until_signal(
            lambda stop: run_demo(
                s,
                stop,
                simulate=not no_sim,
                scenario=scenario,
                history_days=history_days,
                operators=operators,
            )
        )
    )


def gateway(
    instance: Annotated[
        str | None,
        typer.Option(help="Name of this copy (stable MQTT client id); default CARECALL_INSTANCE or 1."),
    ] = None,
    lane: Annotated[
        str | None,
        typer.Option(
            help="What this process serves: all (alarms and readings, one process), events "
            "(alarms only: events, status, wills, their acks and config) or readings "
            "(telemetry only; merged and shed first under overload, counted). Default "
            "CARECALL_GATEWAY_LANE or all."
        ),
    ] = None,
) -> None:
    """The device gateway alone, against a real broker (CARECALL_MQTT_URL). Run several
    copies with different --instance names: they share the subscription. In production
    run the lanes apart: `--lane events` and `--lane readings` processes (several of
    each), so no reading ever delays an alarm; each lane shares its own group. CPU
    priority (CARECALL_CPU_PRIORITY, default auto): events/all nice -10, readings +10."""
    from carecall.shell.runtime import run_gateway

    if lane is not None and lane not in ("all", "events", "readings"):
        fail("--lane must be all, events or readings")
    s = settings_from(instance=instance, gateway_lane=lane)
    apply_nice(role_of("gateway", s.gateway_lane), s.cpu_priority)
    run(until_signal(lambda stop: run_gateway(s, stop)))


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
) -> None:
    """The web server alone (API, health, metrics). CPU priority (CARECALL_CPU_PRIORITY,
    default auto): nice -5."""
    from carecall.shell.runtime import run_serve

    s = settings_from(http_host=host, http_port=port)
    apply_nice("serve", s.cpu_priority)
    run(until_signal(lambda stop: run_serve(s, stop, s.http_host, s.http_port)))


def dispatcher_cmd(
    instance: Annotated[
        str | None, typer.Option(help="Name of this copy; default CARECALL_INSTANCE or 1.")
    ] = None,
    loops: Annotated[
        str | None,
        typer.Option(
            help="Which loops this copy runs: all, or a comma list of intake, timers, outbox, "
            "watchdog, visits, order_levels; default CARECALL_DISPATCHER_LOOPS or all. "
            "E.g. one copy --loops intake (the alarm lane: events → calls → consoles) and "
            "one --loops timers,outbox,watchdog,visits,order_levels. Every loop must run "
            "in some copy.",
        ),
    ] = None,
) -> None:
    """The dispatcher alone: stored events → calls, escalation timers, notifications and
    device acks. Several copies may run against one PostgreSQL: each step fires once. CPU
    priority (CARECALL_CPU_PRIORITY, default auto): nice -5."""
    from carecall.shell.runtime import run_dispatcher

    over = {} if loops is None else {"dispatcher_loops": loops}
    s = settings_from(instance=instance, **over)
    apply_nice("dispatcher", s.cpu_priority)
    run(until_signal(lambda stop: run_dispatcher(s, stop)))

"""The ``carecall`` command line.

Every subcommand reads settings the same way (flags > CARECALL_* environment > the YAML
file given with --config / CARECALL_CONFIG > defaults) and fails at start with one line
naming a bad setting.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from config.settings import Settings, SettingsError, load_settings
from dispatcher.logs import configure_logging
from dispatcher.oversight.cli import report_app
from simulators.bench_cli import bench_command

T = TypeVar("T")

app = typer.Typer(
    name="carecall",
    help="CareCall: emergency calls from home-care devices, from the bed to the responder at the door.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
users_app = typer.Typer(help="Console logins.", no_args_is_help=True)
devices_app = typer.Typer(help="Device credentials.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(devices_app, name="devices")
app.add_typer(audit_app, name="audit")
app.add_typer(users_app, name="users")
app.add_typer(report_app, name="report")
app.command("bench")(bench_command)


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"carecall: {message}", err=True)
    raise typer.Exit(code)


def settings_from(**overrides: Any) -> Settings:
    try:
        s = load_settings(**overrides)
    except SettingsError as exc:
        fail(str(exc))
    configure_logging(s.log_level, s.log_format)
    return s


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _until_signal(factory: Any) -> None:
    from dispatcher.runtime import install_signal_handlers

    stop = asyncio.Event()
    install_signal_handlers(stop)
    await factory(stop)


@app.callback()
def main_options(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML settings file (same keys as CARECALL_* without the prefix).",
            envvar="CARECALL_CONFIG",
        ),
    ] = None,
) -> None:
    if config is not None:
        if not config.is_file():
            fail(f"--config: no such file {config}")
        os.environ["CARECALL_CONFIG"] = str(config)


# --------------------------------------------------------------------------- run parts


@app.command()
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
    from dispatcher.runtime import run_demo

    if operators not in ("history", "always", "never"):
        fail("--operators must be history, always or never")
    if history_days > 0 and speed < 10:
        fail("--history-days needs --speed of at least 10 (a month at ×5,000 takes about 10 minutes)")
    s = settings_from(speed=speed, http_port=port, embedded_mqtt_port=mqtt_port, mqtt_url=None)
    if s.mqtt_url is not None:
        fail("demo runs its own embedded broker; unset CARECALL_MQTT_URL")
    run(
        _until_signal(
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


@app.command()
def gateway(
    instance: Annotated[
        str | None,
        typer.Option(help="Name of this copy (stable MQTT client id); default CARECALL_INSTANCE or 1."),
    ] = None,
) -> None:
    """The device gateway alone, against a real broker (CARECALL_MQTT_URL). Run several
    copies with different --instance names: they share the subscription."""
    from dispatcher.runtime import run_gateway

    s = settings_from(instance=instance)
    run(_until_signal(lambda stop: run_gateway(s, stop)))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port.")] = None,
) -> None:
    """The web server alone (API, health, metrics)."""
    from dispatcher.runtime import run_serve

    s = settings_from(http_host=host, http_port=port)
    run(_until_signal(lambda stop: run_serve(s, stop, s.http_host, s.http_port)))


@app.command("dispatcher")
def dispatcher_cmd(
    instance: Annotated[
        str | None, typer.Option(help="Name of this copy; default CARECALL_INSTANCE or 1.")
    ] = None,
) -> None:
    """The dispatcher alone: stored events → calls, escalation timers, notifications and
    device acks. Several copies may run against one PostgreSQL: each step fires once."""
    from dispatcher.runtime import run_dispatcher

    s = settings_from(instance=instance)
    run(_until_signal(lambda stop: run_dispatcher(s, stop)))


# --------------------------------------------------------------------------- data


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or upgrade the schema of CARECALL_DATABASE_URL."""
    from dispatcher.migrate import upgrade

    s = settings_from()
    try:
        upgrade(s.database_url, revision)
    except Exception as exc:
        fail(f"db upgrade failed: {exc}", 1)
    typer.echo(f"database at {revision}: {s.database_url}")


@app.command("seed-demo")
def seed_demo(
    secrets_out: Annotated[
        Path, typer.Option(help="Where to write the demo devices' secrets (mode 0600).")
    ] = Path("carecall-demo-secrets.json"),
) -> None:
    """Load the bundled demo county (Tanghe-like: 1 county, 6 street, 78 community stations,
    210 family beds) into the configured database."""
    from dispatcher.runtime import ensure_demo_county, open_core

    s = settings_from()

    async def go() -> int:
        core = await open_core(s)
        try:
            return len(await ensure_demo_county(core, secrets_out.resolve()))
        finally:
            await core.close()

    n = run(go())
    typer.echo(f"demo county loaded into {s.database_url}; {n} device secrets in {secrets_out}")


@app.command("import")
def import_(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="CSV or XLSX files named by kind (stations.csv, homes.xlsx, …).", exists=True, dir_okay=False
        ),
    ],
    kind: Annotated[str | None, typer.Option(help="Kind of every file, when the names don't say it.")] = None,
) -> None:
    """Import stations, staff, homes, residents and devices. A bad row is reported with
    file, row and reason, and nothing from that file is applied."""
    from dispatcher.registry.io import RegistryImportError, import_file, import_files
    from dispatcher.runtime import open_core

    s = settings_from()

    async def go() -> None:
        core = await open_core(s)
        try:
            if kind:
                for f in files:
                    rep = await import_file(core.maker, f, kind)
                    typer.echo(f"{f}: {rep}")
            else:
                for rep in await import_files(core.maker, files):
                    typer.echo(str(rep))
        finally:
            await core.close()

    try:
        run(go())
    except RegistryImportError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except ValueError as exc:
        fail(str(exc))


class ExportFormat(StrEnum):
    csv = "csv"
    xlsx = "xlsx"


@app.command()
def export(
    kind: Annotated[str, typer.Argument(help="stations, staff, homes, residents or devices")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="csv or xlsx")] = ExportFormat.csv,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file.")] = Path("-"),
) -> None:
    """Export one kind of registry record (CSV has a header row, first column id).
    Device secrets are never exported."""
    from dispatcher.registry.io import KINDS, export_kind
    from dispatcher.runtime import open_core

    if kind not in KINDS:
        fail(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if str(out) == "-":
        fail("--out FILE is required")
    s = settings_from()

    async def go() -> int:
        core = await open_core(s)
        try:
            return await export_kind(core.maker, kind, format.value, out)
        finally:
            await core.close()

    n = run(go())
    typer.echo(f"{n} {kind} written to {out}")


@devices_app.command("issue")
def devices_issue(
    device_id: Annotated[str, typer.Argument(help="Device id: [A-Za-z0-9_-]{1,64}")],
    home: Annotated[str, typer.Option("--home", help="Home (family care bed) the device belongs to.")],
    kind: Annotated[
        str | None,
        typer.Option(help="hub, button, watch, radar, mattress, smoke, gas, water, door (new devices)"),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Device model name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"id": …, "secret": …}.')] = False,
) -> None:
    """Register a device, or re-key an existing one, and print its secret once.
    Re-run `carecall broker-config` afterwards when the broker is Mosquitto."""
    from dispatcher.registry.service import issue_device
    from dispatcher.runtime import open_core

    s = settings_from()

    async def go() -> str:
        core = await open_core(s)
        try:
            async with core.maker() as session, session.begin():
                return await issue_device(
                    session, device_id=device_id, home_id=home, kind=kind, model=model, now=datetime.now(UTC)
                )
        finally:
            await core.close()

    try:
        secret = run(go())
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"id": device_id, "secret": secret}))
    else:
        typer.echo(f"device {device_id} issued. Secret (shown once, store it in the device now):\n{secret}")


@app.command("broker-config")
def broker_config(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for mosquitto.conf, passwd and acl.")],
    platform_password: Annotated[
        str | None,
        typer.Option(
            help="Password of the platform account (default: the one in CARECALL_MQTT_URL).",
            envvar="CARECALL_MQTT_PLATFORM_PASSWORD",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Listener port written into mosquitto.conf.")] = 1883,
    bind: Annotated[str, typer.Option(help="Listener address written into mosquitto.conf.")] = "127.0.0.1",
) -> None:
    """Write Mosquitto's password file and ACL for every enabled device: each device may
    publish only under its own topics and read only its own ack/config."""
    from device_gateway.broker_config import write_broker_config
    from device_gateway.service import MqttTarget
    from dispatcher.runtime import PLATFORM_USER, open_core

    s = settings_from()
    user, password = PLATFORM_USER, platform_password
    if s.mqtt_url:
        t = MqttTarget.from_url(s.mqtt_url)
        user = t.username or user
        password = password or t.password
    if not password:
        fail(
            "no platform password: put it in CARECALL_MQTT_URL (mqtt://user:password@host) or pass --platform-password"
        )

    async def go() -> Any:
        core = await open_core(s)
        try:
            return await write_broker_config(
                core.maker,
                out,
                platform_username=user,
                platform_password=password,
                listener_port=port,
                bind=bind,
            )
        finally:
            await core.close()

    files = run(go())
    typer.echo(f"broker configuration written to {out}: {files}")
    typer.echo(f"start it with: mosquitto -c {out / 'mosquitto.conf'}")


@app.command()
def schemas(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the JSON Schemas.")] = Path(
        "docs/schemas"
    ),
) -> None:
    """Write the JSON Schemas of the device protocol's payloads."""
    from device_gateway.schemas import write_schemas

    for path in write_schemas(out):
        typer.echo(str(path))


@app.command()
def simulate(
    homes: Annotated[
        int,
        typer.Option(help="Demo county: simulate the devices of the first N homes (secrets file).", min=1),
    ] = 10,
    devices: Annotated[
        int | None,
        typer.Option(
            help="County/city scale: N simulated devices (at most 100,000), registered in the configured "
            "database under --fleet-prefix (reused when already there) instead of the demo county.",
            min=1,
            max=100_000,
        ),
    ] = None,
    scenario: Annotated[
        str,
        typer.Option(
            help="A shipped scenario (normal, quiet, storm, alarm_storm, winter_night, heat_wave, power_cut, "
            "flapping, resend_forever) or a YAML file."
        ),
    ] = "normal",
    duration: Annotated[
        float | None,
        typer.Option(help="Simulated seconds to run, then stop (default: the scenario's, else 600).", min=1),
    ] = None,
    speed: Annotated[float, typer.Option(help="Simulated time factor.", min=0.01, max=10000)] = 1.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            help="At most this many devices get an MQTT connection of their own (default: as many as the "
            "open-files limit allows); the rest run in load mode.",
            min=0,
        ),
    ] = None,
    max_messages: Annotated[
        int, typer.Option(help="Stop after this many publishes (telemetry, events, resends, status).", min=1)
    ] = 5_000_000,
    fleet_prefix: Annotated[
        str, typer.Option(help="Id prefix of the simulated fleet (--devices).", rich_help_panel="Scale")
    ] = "sim",
    fleet_secrets: Annotated[
        Path | None,
        typer.Option(
            help="Where the fleet's device secrets are kept, mode 0600 (default carecall-fleet-PREFIX-secrets.json).",
            rich_help_panel="Scale",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the scenario's random streams.")] = 1,
    secrets_file: Annotated[
        Path, typer.Option("--secrets", help="Demo county: JSON map device id → secret.")
    ] = Path("carecall-demo-secrets.json"),
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            help="Broker to connect to (default CARECALL_MQTT_URL, else the demo's embedded broker on "
            "127.0.0.1:1884). Its user and password, when given, read the acks in load mode (the platform "
            "account on a broker with an ACL)."
        ),
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(help="Allow a broker (given with --mqtt-url) or database that is not on this machine."),
    ] = False,
    prepare_only: Annotated[
        bool,
        typer.Option(
            help="Register (or reuse) the fleet and key its connected devices, then exit: for a Mosquitto "
            "with a password file, run `carecall broker-config` and SIGHUP it before the real run.",
            rich_help_panel="Scale",
        ),
    ] = False,
    plain: Annotated[bool, typer.Option(help="Plain progress lines even on a terminal.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write the run's report as JSON here.")] = None,
) -> None:
    """Run simulated family-bed devices against a broker: heartbeats, alarms that resend until
    acked, the scenario's stories. Real per-device MQTT connections as far as the open-files
    limit allows, the rest through one privileged load-generator identity (load mode). Shows
    progress bars and a live summary on stderr, prints a JSON report on stdout, and stops by
    itself after --duration or --max-messages. Targets loopback only, unless the broker is
    given with --mqtt-url and --allow-remote."""
    from sqlalchemy.engine import make_url

    from device_gateway.service import MqttTarget
    from dispatcher.clock import make_clock
    from dispatcher.runtime import device_specs, install_signal_handlers, load_secrets, open_core
    from simulators.fleet import FleetReport, ensure_fleet, run_fleet
    from simulators.live import LiveSummary
    from simulators.runner import check_host
    from simulators.scenario import load_scenario

    s = settings_from(speed=speed)
    url = mqtt_url or s.mqtt_url or f"mqtt://127.0.0.1:{s.embedded_mqtt_port}"
    target = MqttTarget.from_url(url)
    try:
        check_host(target.host)
    except ValueError:
        if mqtt_url is None or not allow_remote:
            fail(
                f"refusing to simulate devices against {target.host!r}: load runs target loopback only; "
                "give a remote broker explicitly with --mqtt-url and --allow-remote"
            )
    db_host = make_url(s.database_url).host
    if devices is not None and db_host and not allow_remote:
        try:
            check_host(db_host)
        except ValueError:
            fail(
                f"refusing to register a simulated fleet in the database on {db_host!r} (pass --allow-remote)"
            )
    try:
        scen = load_scenario(scenario)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    if prepare_only and devices is None:
        fail("--prepare-only needs --devices N")
    run_s = duration if duration is not None else (scen.duration_s or 600.0)
    secrets_: dict[str, str] = {}
    if devices is None:
        secrets_ = load_secrets(secrets_file)
        if not secrets_:
            fail(
                f"no device secrets in {secrets_file}: run `carecall seed-demo` (or pass --secrets FILE), "
                "or simulate a registered fleet with --devices N"
            )
    secrets_path = fleet_secrets or Path(f"carecall-fleet-{fleet_prefix}-secrets.json")

    async def go(live: LiveSummary) -> FleetReport | None:
        from sqlalchemy import func, select

        from dispatcher.models import DeviceEvent
        from simulators.fleet import FD_RESERVE, fd_soft_after_raise, plan_modes

        core = await open_core(s)
        try:
            setup = None
            lg_user = lg_pass = None
            if devices is None:
                specs = await device_specs(core.maker, secrets_, homes)
                if not specs:
                    fail("no devices with known secrets to simulate")
            else:
                # Key only the devices that will get a connection of their own.
                soft = fd_soft_after_raise(devices + FD_RESERVE)
                real_n, _ = plan_modes(devices, soft, max_connections=max_connections)
                live.say(f"registering {devices} simulated devices under prefix {fleet_prefix!r} …")
                prepared = await ensure_fleet(
                    core.maker,
                    devices,
                    prefix=fleet_prefix,
                    connected=real_n,
                    secrets_path=secrets_path.resolve(),
                )
                setup = prepared.setup
                specs = prepared.specs
                lg_user, lg_pass = prepared.loadgen_id, prepared.loadgen_secret
                live.say(
                    f"fleet {fleet_prefix!r}: {setup.created} registered, {setup.reused} reused, "
                    f"{setup.keyed} keyed in {setup.seconds:g} s"
                )
                if prepare_only:
                    return None
            stop = asyncio.Event()
            install_signal_handlers(stop)
            live.say(
                f"simulating {len(specs)} devices against {target.host}:{target.port}, scenario "
                f"{scen.name!r}, {run_s:g} simulated s at ×{speed:g}, at most {max_messages} messages"
            )
            started = datetime.now(UTC)
            result = await run_fleet(
                host=target.host,
                port=target.port,
                specs=specs,
                scenario=scen,
                clock=make_clock(speed),
                duration_s=run_s,
                loadgen_username=lg_user,
                loadgen_password=lg_pass,
                observer_username=target.username,
                observer_password=target.password,
                max_connections=max_connections,
                max_messages=max_messages,
                allow_remote=allow_remote,
                stop=stop,
                on_stats=live.update,
                on_progress=live.say,
                seed=seed,
            )
            prefix = fleet_prefix if devices is not None else None
            stored = None
            if prefix is not None:
                async with core.maker() as session:
                    stored = await session.scalar(
                        select(func.count())
                        .select_from(DeviceEvent)
                        .where(
                            DeviceEvent.device_id.startswith(f"{prefix}-d", autoescape=True),
                            DeviceEvent.source == "device",
                            DeviceEvent.received_at >= started,
                        )
                    )
            return result.model_copy(update={"setup": setup, "events_stored": stored})
        finally:
            await core.close()

    live = LiveSummary(rich=False if plain else None)
    try:
        with live:
            result = run(go(live))
    except (ValueError, ConnectionError) as exc:
        fail(str(exc))
    if result is None:
        return
    text = result.model_dump_json(indent=2)
    typer.echo(text)
    if report:
        report.write_text(text, encoding="utf-8")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check every audit row against the hash chain; name the first edited, deleted or
    reordered row. Exit 0 when intact, 1 when not."""
    from dispatcher.audit import verify_log
    from dispatcher.runtime import open_core

    s = settings_from()

    async def go() -> Any:
        core = await open_core(s, migrate=False)
        try:
            return await verify_log(core.maker)
        finally:
            await core.close()

    verdict = run(go())
    if verdict.ok:
        typer.echo(f"audit log intact: {verdict.rows_checked} rows verified")
        return
    typer.echo(
        f"audit log BROKEN at seq {verdict.first_bad_seq}: {verdict.problem} ({verdict.rows_checked} rows checked)",
        err=True,
    )
    raise typer.Exit(1)


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="operator, supervisor or admin")],
    station: Annotated[
        str | None, typer.Option(help="Station whose subtree the user sees (not for admins).")
    ] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password: Annotated[
        str | None,
        typer.Option(
            help="Password (default: generated and printed once).", envvar="CARECALL_NEW_USER_PASSWORD"
        ),
    ] = None,
) -> None:
    """Create a console login."""
    import secrets as _secrets

    from dispatcher.auth import create_user
    from dispatcher.runtime import open_core

    s = settings_from()
    pw = password or _secrets.token_urlsafe(12)

    async def go() -> None:
        core = await open_core(s)
        try:
            async with core.maker() as session, session.begin():
                await create_user(
                    session,
                    username=username,
                    password=pw,
                    role=role,
                    station_id=station,
                    display_name=name or username,
                    now=datetime.now(UTC),
                )
        finally:
            await core.close()

    try:
        run(go())
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"user {username} ({role}) created" + ("" if password else f"; password: {pw} (shown once)"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

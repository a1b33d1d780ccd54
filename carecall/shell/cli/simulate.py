"""``carecall simulate``: simulated devices against a broker, at demo or county scale."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from carecall.shell.cli.common import fail, run, settings_from
from config.settings import Settings

# The command line answers --help without loading the platform: what a run needs is
# imported when it runs.
if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from carecall.shell.fleet_registry import PreparedFleet, SimulateReport
    from device_gateway.mqtt import MqttTarget
    from simulators.live import LiveSummary
    from simulators.scenario import Scenario


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
    from carecall.shell.secret_files import load_secrets
    from simulators.live import LiveSummary
    from simulators.scenario import load_scenario

    s = settings_from(speed=speed)
    url = mqtt_url or s.mqtt_url or f"mqtt://127.0.0.1:{s.embedded_mqtt_port}"
    target = _target(url, given=mqtt_url is not None, allow_remote=allow_remote)
    if devices is not None and not allow_remote:
        _check_database(s.database_url)
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
    run_ = _Run(
        settings=s,
        target=target,
        scenario=scen,
        run_s=run_s,
        speed=speed,
        devices=devices,
        homes=homes,
        secrets=secrets_,
        fleet_prefix=fleet_prefix,
        secrets_path=fleet_secrets or Path(f"carecall-fleet-{fleet_prefix}-secrets.json"),
        max_connections=max_connections,
        max_messages=max_messages,
        allow_remote=allow_remote,
        prepare_only=prepare_only,
        seed=seed,
    )
    live = LiveSummary(rich=False if plain else None)
    try:
        with live:
            result = run(run_.go(live))
    except (ValueError, ConnectionError) as exc:
        fail(str(exc))
    if result is None:
        return
    text = result.model_dump_json(indent=2)
    typer.echo(text)
    if report:
        report.write_text(text, encoding="utf-8")


def _target(url: str, *, given: bool, allow_remote: bool) -> MqttTarget:
    """The broker to simulate against: loopback, unless given with --mqtt-url and --allow-remote."""
    from device_gateway.mqtt import MqttTarget
    from simulators.runner import check_host

    target = MqttTarget.from_url(url)
    try:
        check_host(target.host)
    except ValueError:
        if not given or not allow_remote:
            fail(
                f"refusing to simulate devices against {target.host!r}: load runs target loopback only; "
                "give a remote broker explicitly with --mqtt-url and --allow-remote"
            )
    return target


def _check_database(database_url: str) -> None:
    """A fleet is registered on this machine's database only (unless --allow-remote)."""
    from sqlalchemy.engine import make_url

    from simulators.runner import check_host

    db_host = make_url(database_url).host
    if not db_host:
        return
    try:
        check_host(db_host)
    except ValueError:
        fail(f"refusing to register a simulated fleet in the database on {db_host!r} (pass --allow-remote)")


@dataclass(frozen=True)
class _Run:
    """One ``carecall simulate`` run, its options checked."""

    settings: Settings
    target: MqttTarget
    scenario: Scenario
    run_s: float
    speed: float
    devices: int | None
    homes: int
    secrets: dict[str, str]
    fleet_prefix: str
    secrets_path: Path
    max_connections: int | None
    max_messages: int
    allow_remote: bool
    prepare_only: bool
    seed: int

    async def go(self, live: LiveSummary) -> SimulateReport | None:
        from carecall.core.clock import make_clock
        from carecall.shell.demo import device_specs
        from carecall.shell.fleet_registry import FleetSetup, SimulateReport, events_stored
        from carecall.shell.runtime import install_signal_handlers, open_core
        from simulators.fleet import run_fleet

        core = await open_core(self.settings)
        try:
            setup: FleetSetup | None = None
            lg_user = lg_pass = None
            if self.devices is None:
                specs = await device_specs(core.maker, self.secrets, self.homes)
                if not specs:
                    fail("no devices with known secrets to simulate")
            else:
                prepared = await self._fleet(core.maker, self.devices, live)
                setup, specs = prepared.setup, prepared.specs
                lg_user, lg_pass = prepared.loadgen_id, prepared.loadgen_secret
                if self.prepare_only:
                    return None
            stop = asyncio.Event()
            install_signal_handlers(stop)
            t = self.target
            live.say(
                f"simulating {len(specs)} devices against {t.host}:{t.port}, scenario "
                f"{self.scenario.name!r}, {self.run_s:g} simulated s at ×{self.speed:g}, at most {self.max_messages} messages"
            )
            started = datetime.now(UTC)
            result = await run_fleet(
                host=t.host,
                port=t.port,
                specs=specs,
                scenario=self.scenario,
                clock=make_clock(self.speed),
                duration_s=self.run_s,
                loadgen_username=lg_user,
                loadgen_password=lg_pass,
                observer_username=t.username,
                observer_password=t.password,
                max_connections=self.max_connections,
                max_messages=self.max_messages,
                allow_remote=self.allow_remote,
                stop=stop,
                on_stats=live.update,
                on_progress=live.say,
                seed=self.seed,
            )
            stored = None
            if self.devices is not None:
                stored = await events_stored(core.maker, self.fleet_prefix, since=started)
            return SimulateReport(**dict(result), setup=setup, events_stored=stored)
        finally:
            await core.close()

    async def _fleet(
        self, maker: async_sessionmaker[AsyncSession], devices: int, live: LiveSummary
    ) -> PreparedFleet:
        """Register (or reuse) the fleet; key only the devices that will get a connection of their own."""
        from carecall.shell.fleet_registry import ensure_fleet
        from simulators.fleet import FD_RESERVE, fd_soft_after_raise, plan_modes

        soft = fd_soft_after_raise(devices + FD_RESERVE)
        real_n, _ = plan_modes(devices, soft, max_connections=self.max_connections)
        prefix = self.fleet_prefix
        live.say(f"registering {devices} simulated devices under prefix {prefix!r} …")
        prepared = await ensure_fleet(
            maker, devices, prefix=prefix, connected=real_n, secrets_path=self.secrets_path.resolve()
        )
        setup = prepared.setup
        live.say(
            f"fleet {prefix!r}: {setup.created} registered, {setup.reused} reused, "
            f"{setup.keyed} keyed in {setup.seconds:g} s"
        )
        return prepared

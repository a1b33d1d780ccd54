"""``carecall db`` / ``seed-demo`` / ``import`` / ``export`` / ``devices`` / ``broker-config`` /
``schemas``: the schema, the registry's records and device credentials, and the broker's
configuration from them."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from carecall.shell.cli.common import fail, run, settings_from

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
devices_app = typer.Typer(help="Device credentials.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Create or upgrade the schema of CARECALL_DATABASE_URL."""
    from carecall.core.migrate import upgrade

    s = settings_from()
    try:
        upgrade(s.database_url, revision)
    except Exception as exc:
        fail(f"db upgrade failed: {exc}", 1)
    typer.echo(f"database at {revision}: {s.database_url}")


def seed_demo(
    secrets_out: Annotated[
        Path, typer.Option(help="Where to write the demo devices' secrets (mode 0600).")
    ] = Path("carecall-demo-secrets.json"),
) -> None:
    """Load the bundled demo county (Tanghe-like: 1 county, 6 street, 78 community stations,
    210 family beds, 7 service providers, residents' special-difficulty groups) into the
    configured database."""
    from carecall.shell.demo import ensure_demo_county
    from carecall.shell.runtime import open_core

    s = settings_from()

    async def go() -> int:
        core = await open_core(s)
        try:
            return len(await ensure_demo_county(core, secrets_out.resolve()))
        finally:
            await core.close()

    n = run(go())
    typer.echo(f"demo county loaded into {s.database_url}; {n} device secrets in {secrets_out}")


def import_(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="CSV or XLSX files named by kind (stations.csv, homes.xlsx, …).", exists=True, dir_okay=False
        ),
    ],
    kind: Annotated[str | None, typer.Option(help="Kind of every file, when the names don't say it.")] = None,
) -> None:
    """Import stations, staff, homes, residents and devices (docs/import.md), all or
    nothing: every row of every file is checked in one transaction; when any row fails
    nothing is written, the problems are listed (file, row, column, value, reason) and
    the exit status is 1."""
    from carecall.shell.runtime import open_core
    from dispatcher.registry.importing import ImportReport, import_files
    from dispatcher.registry.row_errors import error_table

    s = settings_from()

    async def go() -> list[ImportReport]:
        core = await open_core(s)
        try:
            return await import_files(core.maker, files, kind=kind, bus=core.bus, by="cli")
        finally:
            await core.close()

    try:
        reports = run(go())
    except ValueError as exc:
        fail(str(exc))
    for rep in reports:
        typer.echo(rep.summary())
    errors = [e for rep in reports for e in rep.errors]
    if errors:
        count = len(errors)
        typer.echo(f"\n{error_table(errors)}\n", err=True)
        typer.echo(
            f"carecall: import refused, {count} problem{'s' if count != 1 else ''}; nothing was written",
            err=True,
        )
        raise typer.Exit(1)


class ExportFormat(StrEnum):
    csv = "csv"
    xlsx = "xlsx"


def export(
    kind: Annotated[str, typer.Argument(help="stations, staff, homes, residents or devices")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="csv or xlsx")] = ExportFormat.csv,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file.")] = Path("-"),
) -> None:
    """Export one kind of registry record (CSV has a header row, first column id).
    Device secrets are never exported."""
    from carecall.shell.runtime import open_core
    from dispatcher.registry.export import export_kind
    from dispatcher.registry.files import KINDS

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
    device_id: Annotated[
        str | None, typer.Argument(help="Device id: [A-Za-z0-9_-]{1,64} (not with --all-new).")
    ] = None,
    home: Annotated[
        str | None, typer.Option("--home", help="Home (family care bed) the device belongs to.")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="hub, button, watch, radar, mattress, smoke, gas, water, door (new devices)"),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Device model name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"id": …, "secret": …}.')] = False,
    all_new: Annotated[
        bool,
        typer.Option(
            "--all-new", help="Issue a first secret to every device that has none yet (needs --out)."
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="With --all-new: new file (mode 0600) for the secrets as JSON {id: secret}; "
            "an existing file is never overwritten.",
        ),
    ] = None,
) -> None:
    """Register a device, or re-key an existing one, and print its secret once; or, with
    --all-new, key every device imported without a secret and write the secrets to a new
    private file (never to the screen). With CARECALL_MQTT_ADMIN_URL the secrets are
    installed on Mosquitto at once; gateways are told through the bus."""
    if all_new:
        if device_id is not None or home or kind or model or as_json:
            fail("--all-new takes no device id, --home, --kind, --model or --json")
        if out is None:
            fail("--all-new needs --out FILE for the secrets")
        _issue_all_new(out)
        return
    if device_id is None or not home:
        fail("give a device id and --home, or --all-new --out FILE")
    _issue_one(device_id, home, kind, model, as_json)


def _issue_one(device_id: str, home: str, kind: str | None, model: str | None, as_json: bool) -> None:
    from carecall.shell.runtime import open_core
    from device_gateway.broker_sync import install_issued_secret
    from device_gateway.changes import announce_devices
    from dispatcher.registry.service import issue_device

    s = settings_from()

    async def go() -> tuple[str, str | None]:
        core = await open_core(s)
        try:
            async with core.maker() as session, session.begin():
                secret = await issue_device(
                    session, device_id=device_id, home_id=home, kind=kind, model=model, now=datetime.now(UTC)
                )
            # after the commit: the broker takes the new secret first, then the gateways
            # (and any broker sync) reload the device: new, or its old secret now refused
            broker_error = await install_issued_secret(core.maker, s.mqtt_admin_url, device_id, secret)
            await announce_devices(core.bus, [device_id], by="cli")
            return secret, broker_error
        finally:
            await core.close()

    try:
        secret, broker_error = run(go())
    except ValueError as exc:
        fail(str(exc))
    if broker_error:
        typer.echo(f"carecall: the broker did not take the new secret yet: {broker_error}", err=True)
    if as_json:
        typer.echo(json.dumps({"id": device_id, "secret": secret}))
    else:
        typer.echo(f"device {device_id} issued. Secret (shown once, store it in the device now):\n{secret}")


def _issue_all_new(out: Path) -> None:
    """The file is created first (O_EXCL, 0600), so an existing one stops everything before
    a secret is issued; the secrets are on disk before the transaction commits, and a
    failed commit removes the file again."""
    from carecall.shell.runtime import open_core
    from device_gateway.broker_sync import install_issued_secret
    from device_gateway.changes import announce_devices
    from dispatcher.registry.service import issue_missing

    s = settings_from()
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{out} exists; it is never overwritten (it may hold secrets): choose a new file")
    except OSError as exc:
        fail(f"cannot create {out}: {exc.strerror}")
    os.fchmod(fd, 0o600)  # whatever the umask
    fh = os.fdopen(fd, "w", encoding="utf-8")
    committed = False

    async def go() -> tuple[int, list[str]]:
        nonlocal committed
        core = await open_core(s)
        try:
            async with core.maker() as session, session.begin():
                secrets_ = await issue_missing(session, now=datetime.now(UTC))
                json.dump(secrets_, fh, indent=1, sort_keys=True)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            committed = True
            problems: list[str] = []
            for device_id, secret in secrets_.items():
                error = await install_issued_secret(core.maker, s.mqtt_admin_url, device_id, secret)
                if error:
                    problems.append(f"{device_id}: {error}")
                    break  # the broker is unreachable or refusing: do not wait on each device
            await announce_devices(core.bus, list(secrets_), by="cli")
            return len(secrets_), problems
        finally:
            await core.close()

    try:
        count, problems = run(go())
    except BaseException as exc:
        fh.close()
        if not committed:  # no secret was stored: the file holds nothing that works
            out.unlink(missing_ok=True)
        if isinstance(exc, ValueError):
            fail(str(exc))
        raise
    fh.close()
    if problems:
        typer.echo(
            f"carecall: the broker did not take the new secrets yet ({problems[0]}); "
            "rerun `carecall broker-config` with the broker stopped",
            err=True,
        )
    if count == 0:
        out.unlink(missing_ok=True)
        typer.echo("every device already has a secret; nothing issued")
        return
    typer.echo(f"{count} device{'s' if count != 1 else ''} issued; secrets in {out} (mode 0600)")


def broker_config(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for mosquitto.conf and dynamic-security.json.")
    ],
    platform_password: Annotated[
        str | None,
        typer.Option(
            help="Password of the platform account (default: the one in CARECALL_MQTT_URL).",
            envvar="CARECALL_MQTT_PLATFORM_PASSWORD",
        ),
    ] = None,
    admin_password: Annotated[
        str | None,
        typer.Option(
            help="Password of the dynamic-security admin account the gateway uses to refuse and "
            "disconnect disabled or re-keyed devices at once (default: the one in "
            "CARECALL_MQTT_ADMIN_URL).",
            envvar="CARECALL_MQTT_ADMIN_PASSWORD",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Listener port written into mosquitto.conf.")] = 1883,
    bind: Annotated[str, typer.Option(help="Listener address written into mosquitto.conf.")] = "127.0.0.1",
    plugin: Annotated[
        str | None,
        typer.Option(help="Path of mosquitto_dynamic_security.so (default: found in the usual places)."),
    ] = None,
) -> None:
    """Write Mosquitto's configuration for its dynamic-security plugin from the registry:
    every enabled device may connect only with its own client id, publish only its own
    uplink and subscribe only to its own ack/config (no wildcard, no shared group); the
    platform account reads and writes carecall/#; the admin account may only manage the
    plugin. Run it with Mosquitto stopped: the running broker owns dynamic-security.json
    and applies later changes itself (see docs/operations.md). Each enabled device left
    out (no secret issued yet, an unusable id or hash) is named on stderr, with why."""
    from carecall.shell.runtime import PLATFORM_USER, open_core
    from device_gateway.broker_config import DEFAULT_ADMIN_USER, write_broker_config
    from device_gateway.mqtt import MqttTarget

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
    admin_user, admin_pw = DEFAULT_ADMIN_USER, admin_password
    if s.mqtt_admin_url:
        a = MqttTarget.from_url(s.mqtt_admin_url)
        admin_user = a.username or admin_user
        admin_pw = admin_pw or a.password
    if not admin_pw:
        fail(
            "no admin password: put it in CARECALL_MQTT_ADMIN_URL "
            "(mqtt://carecall-broker-admin:password@host) or pass --admin-password"
        )

    async def go() -> Any:
        core = await open_core(s)
        try:
            return await write_broker_config(
                core.maker,
                out,
                platform_username=user,
                platform_password=password,
                admin_username=admin_user,
                admin_password=admin_pw,
                listener_port=port,
                bind=bind,
                plugin_path=plugin,
            )
        finally:
            await core.close()

    try:
        files = run(go())
    except ValueError as exc:
        fail(str(exc))
    for device_id, reason in files.left_out:
        typer.echo(f"left out {device_id}: {reason}", err=True)
    if files.left_out:
        count = len(files.left_out)
        typer.echo(f"carecall: {count} enabled device{'s' if count != 1 else ''} left out", err=True)
    typer.echo(
        f"broker configuration written to {out}: {files.devices} devices "
        f"({files.privileged} load generators), {files.skipped} left out"
    )
    typer.echo(f"start it with: mosquitto -c {out / 'mosquitto.conf'}")


def schemas(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the JSON Schemas.")] = Path(
        "docs/schemas"
    ),
) -> None:
    """Write the JSON Schemas of the device protocol's payloads."""
    from device_gateway.schemas import write_schemas

    for path in write_schemas(out):
        typer.echo(str(path))


def basemap(
    ctx: typer.Context,
) -> None:
    """Build the demo county's street map for the console (a PMTiles archive; a real
    deployment sets basemap_file to its own county's extract). Options: --out, --seed,
    --min-zoom, --max-zoom, --font (see `carecall basemap --help`)."""
    from dispatcher.console.basemap import main as build

    raise typer.Exit(build(list(ctx.args)))

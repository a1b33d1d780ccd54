"""The ``carecall`` command line: this module is its index, one line per command, in the
order ``carecall --help`` lists them; each command lives with its group:

- cli/parts.py: demo, gateway, serve, dispatcher (the platform's processes)
- cli/data.py: db, seed-demo, import, export, devices, broker-config, schemas, basemap
- cli/simulate.py: simulate
- cli/accounts.py: audit, users
- cli/report.py: report (oversight figures)
- cli/bench.py: bench

Every subcommand reads settings the same way (flags > CARECALL_* environment > the YAML
file given with --config / CARECALL_CONFIG > defaults) and fails at start with one line
naming a bad setting (cli/common.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from carecall.shell.cli import accounts, data, parts
from carecall.shell.cli.bench import bench_command
from carecall.shell.cli.common import fail
from carecall.shell.cli.report import report_app
from carecall.shell.cli.simulate import simulate

app = typer.Typer(
    name="carecall",
    help="CareCall: emergency calls from home-care devices, from the bed to the responder at the door.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data.db_app, name="db")
app.add_typer(data.devices_app, name="devices")
app.add_typer(accounts.audit_app, name="audit")
app.add_typer(accounts.users_app, name="users")
app.add_typer(report_app, name="report")
app.command("bench")(bench_command)
app.command()(parts.demo)
app.command()(parts.gateway)
app.command()(parts.serve)
app.command("dispatcher")(parts.dispatcher_cmd)
app.command("seed-demo")(data.seed_demo)
app.command("import")(data.import_)
app.command()(data.export)
app.command("broker-config")(data.broker_config)
app.command()(data.schemas)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})(
    data.basemap
)
app.command()(simulate)


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


def main() -> None:
    app()

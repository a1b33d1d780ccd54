"""Every ``carecall ... --help`` reads in an 80-column terminal: no line wider than 80
display columns when COLUMNS=80 (typer's rich panels and basemap's argparse alike)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from carecall.core.tabular import display_width
from carecall.shell.cli import app

WIDTH = 80


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*path, name))


PATHS = list(command_paths(typer.main.get_command(app)))


def test_every_command_is_walked() -> None:
    names = {" ".join(p) for p in PATHS}
    # the index in carecall/shell/cli/__init__.py, groups and their subcommands
    for expected in ("", "demo", "simulate", "import", "export", "basemap", "db upgrade", "users create"):
        assert expected in names, sorted(names)
    assert any(p[:1] == ("report",) and len(p) == 2 for p in PATHS)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "carecall")
def test_help_fits_80_columns(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any("usage" in line.lower() for line in lines), result.output
    wide = [line for line in lines if display_width(line) > WIDTH]
    assert not wide, "\n".join(wide)


def test_help_fits_80_columns_in_a_real_process() -> None:
    """The entry point as a terminal runs it (rich measures COLUMNS itself there)."""
    env = {"COLUMNS": str(WIDTH), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    for args in (["--help"], ["demo", "--help"], ["basemap", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "carecall.shell.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        wide = [line for line in out.splitlines() if display_width(line) > WIDTH]
        assert out and not wide, "\n".join(wide)

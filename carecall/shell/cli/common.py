"""What every ``carecall`` subcommand shares: settings read one way, one-line failures,
and running a coroutine until done or interrupted."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer

from carecall.core.logs import configure_logging
from config.settings import Settings, SettingsError, load_settings

T = TypeVar("T")


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


async def until_signal(factory: Any) -> None:
    """Run ``factory(stop)`` with ``stop`` set by SIGINT/SIGTERM."""
    from carecall.shell.runtime import install_signal_handlers

    stop = asyncio.Event()
    install_signal_handlers(stop)
    await factory(stop)

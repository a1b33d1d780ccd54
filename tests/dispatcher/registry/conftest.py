"""Registry fixtures: migrated SQLite files built once per session and copied per test.

Migrating and loading the demo county take most of a second each; copying a finished
file keeps the whole registry suite fast while every test still gets its own database.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatcher.db import make_engine, make_sessionmaker
from dispatcher.migrate import upgrade
from dispatcher.registry.demo_county import load_demo_county

from .support import NOW, Maker


def _copy_db(template: Path, dest: Path) -> str:
    # A closed SQLite database is normally checkpointed, but copy a left-over WAL too.
    for suffix in ("", "-wal"):
        source = template.with_name(template.name + suffix)
        if source.exists():
            shutil.copyfile(source, dest.with_name(dest.name + suffix))
    return f"sqlite:///{dest}"


@pytest.fixture(scope="session")
def empty_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "empty.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def demo_template(
    empty_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("registry") / "demo.db"
    url = _copy_db(empty_template, path)

    async def load() -> dict[str, str]:
        engine = make_engine(url)
        try:
            return await load_demo_county(make_sessionmaker(engine), now=NOW)
        finally:
            await engine.dispose()

    return path, asyncio.run(load())


@pytest.fixture
async def empty_db(tmp_path: Path, empty_template: Path) -> AsyncIterator[Maker]:
    engine = make_engine(_copy_db(empty_template, tmp_path / "t.db"))
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def second_db(tmp_path: Path, empty_template: Path) -> AsyncIterator[Maker]:
    engine = make_engine(_copy_db(empty_template, tmp_path / "t2.db"))
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def demo_db(
    tmp_path: Path, demo_template: tuple[Path, dict[str, str]]
) -> AsyncIterator[tuple[Maker, dict[str, str]]]:
    template, secrets = demo_template
    engine = make_engine(_copy_db(template, tmp_path / "demo.db"))
    yield make_sessionmaker(engine), dict(secrets)
    await engine.dispose()

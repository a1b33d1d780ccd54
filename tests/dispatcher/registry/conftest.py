"""Registry fixtures on the database chosen with --db (see tests/conftest.py).

Loading the demo county takes a second or two, so it is loaded once per run into a
database that each ``demo_db`` test then gets a copy of.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from carecall.core.db import make_engine, make_sessionmaker
from dispatcher.registry.demo_county import DemoCounty, generate_demo_county
from dispatcher.registry.demo_load import load_demo_county
from tests.conftest import Databases

from .support import NOW, Maker


@pytest.fixture(scope="session")
def demo_template(databases: Databases) -> tuple[str, dict[str, str]]:
    url = databases.create()

    async def load() -> dict[str, str]:
        engine = make_engine(url)
        try:
            return await load_demo_county(make_sessionmaker(engine), now=NOW)
        finally:
            await engine.dispose()

    return url, asyncio.run(load())


@pytest.fixture(scope="module")
def county() -> DemoCounty:
    """The demo county in memory (generated once per test module)."""
    return generate_demo_county()


@pytest.fixture
def empty_db(maker: Maker) -> Maker:
    """An empty migrated registry (the shared per-test database)."""
    return maker


@pytest.fixture
def second_db_url(databases: Databases) -> Iterator[str]:
    url = databases.create()
    yield url
    databases.drop(url)


@pytest.fixture
async def second_db(second_db_url: str) -> AsyncIterator[Maker]:
    engine = make_engine(second_db_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def demo_db_url(databases: Databases, demo_template: tuple[str, dict[str, str]]) -> Iterator[str]:
    url = databases.create(like=demo_template[0])
    yield url
    databases.drop(url)


@pytest.fixture
async def demo_db(
    demo_db_url: str, demo_template: tuple[str, dict[str, str]]
) -> AsyncIterator[tuple[Maker, dict[str, str]]]:
    engine = make_engine(demo_db_url)
    yield make_sessionmaker(engine), dict(demo_template[1])
    await engine.dispose()

"""The test database is the one asked for: a run with ``--db postgresql`` really talks to
PostgreSQL, each test on a fresh database of its own, and ignoring the option fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.db import make_engine, make_sessionmaker
from device_gateway.models import RejectedMessage
from dispatcher.audit.models import AuditHead
from dispatcher.registry.models import Station
from tests.conftest import NOW, Databases, add_small_registry

ROOT = Path(__file__).resolve().parent.parent


async def test_the_database_is_the_backend_asked_for(
    maker: async_sessionmaker[AsyncSession], db_backend: str, db_url: str
) -> None:
    async with maker() as s:
        dialect = s.get_bind().dialect.name
        # .ci/run sets this for its PostgreSQL pass: if --db were ignored, this fails.
        expected = os.environ.get("CARECALL_TEST_DB_EXPECT")
        assert dialect == (expected or db_backend)
        if dialect == "postgresql":
            version = await s.scalar(text("SELECT version()"))
            assert str(version).startswith("PostgreSQL")
            name = await s.scalar(text("SELECT current_database()"))
            assert name == db_url.rsplit("/", 1)[1] and str(name).startswith("carecall_t_")
        # migrated, and empty: a copy of the template, not a database another test used
        assert await s.scalar(text("SELECT version_num FROM alembic_version"))
        assert await s.scalar(select(func.count()).select_from(Station)) == 0


def _reject(n: int) -> RejectedMessage:
    return RejectedMessage(
        received_at=NOW,
        device_id="d",
        topic="t",
        reason="bad_json",
        detail=f"#{n}",
        payload_size=1,
        payload_excerpt="x",
    )


async def test_a_database_given_back_is_as_fresh_as_the_template(
    databases: Databases, db_backend: str
) -> None:
    """Rows, the migrations' own rows and sequences are back where the template had them
    when the next test gets the database (on PostgreSQL the same database, reused)."""
    first = databases.create()
    engine = make_engine(first)
    try:
        maker = make_sessionmaker(engine)
        await add_small_registry(maker, {"d1": "button"})
        async with maker() as s, s.begin():
            s.add_all([_reject(n) for n in range(3)])
            head = await s.get(AuditHead, 1)
            assert head is not None and head.seq == 0
            head.seq, head.hash = 7, "f" * 64
    finally:
        await engine.dispose()
    databases.drop(first)
    again = databases.create()
    assert (again == first) == (db_backend == "postgresql")
    engine = make_engine(again)
    try:
        async with make_sessionmaker(engine)() as s, s.begin():
            assert await s.scalar(select(func.count()).select_from(Station)) == 0
            head = await s.get(AuditHead, 1)
            assert head is not None and (head.seq, head.hash) == (0, "0" * 64)
            row = _reject(9)
            s.add(row)
            await s.flush()
            assert row.id == 1  # the sequence starts again
    finally:
        await engine.dispose()
        databases.drop(again)


async def test_a_database_whose_schema_changed_is_not_given_again(databases: Databases) -> None:
    first = databases.create()
    engine = make_engine(first)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE stations ADD COLUMN left_over INTEGER"))
    finally:
        await engine.dispose()
    databases.drop(first)
    again = databases.create()
    assert again != first
    engine = make_engine(again)
    try:
        async with engine.connect() as conn:
            with pytest.raises(Exception, match="left_over"):
                await conn.execute(text("SELECT left_over FROM stations"))
    finally:
        await engine.dispose()
        databases.drop(again)


def _inner_run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """This file's dialect test in a pytest of its own."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"{Path(__file__).relative_to(ROOT)}::test_the_database_is_the_backend_asked_for",
            *args,
        ],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CARECALL_TEST_DB")} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.integration
def test_the_db_variable_reaches_the_database_and_the_check_bites(pg_databases: Databases) -> None:
    """CARECALL_TEST_DB=postgresql gives PostgreSQL (.ci/run's pass gives --db postgresql
    and checks it with CARECALL_TEST_DB_EXPECT); a run on another database than the one
    expected fails; an unknown database is a usage error."""
    on_pg = _inner_run(env={"CARECALL_TEST_DB": "postgresql", "CARECALL_TEST_DB_EXPECT": "postgresql"})
    assert on_pg.returncode == 0 and "1 passed" in on_pg.stdout, on_pg.stdout + on_pg.stderr
    ignored = _inner_run("--db", "sqlite", env={"CARECALL_TEST_DB_EXPECT": "postgresql"})
    assert ignored.returncode == 1 and "1 failed" in ignored.stdout, ignored.stdout + ignored.stderr
    bad = _inner_run(env={"CARECALL_TEST_DB": "mysql"})
    assert bad.returncode == 4 and "CARECALL_TEST_DB='mysql'" in bad.stderr, bad.stdout + bad.stderr

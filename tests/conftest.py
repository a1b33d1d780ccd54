"""Shared fixtures: one fresh, migrated database per test, on SQLite or PostgreSQL, and a
small registry to test against.

``--db sqlite`` (the default) or ``--db postgresql`` (or ``CARECALL_TEST_DB``) chooses the
database behind ``db_url`` and ``maker``; the same tests run on both. Each run migrates one
template once (a SQLite file, or a PostgreSQL database ``carecall_tmpl_<hex>``) and each
test gets a database in exactly the template's state (see ``Databases``). PostgreSQL is
the server of ``CARECALL_TEST_PG_ADMIN`` (default ``postgresql://postgres@127.0.0.1:5432/test``,
a superuser). When it is unreachable a ``--db postgresql`` test fails in CI (``CI`` set)
and skips elsewhere, saying why.

On PostgreSQL only the tests that use a database are collected: the others do not depend
on it and run in the SQLite pass. Tests marked ``sqlite_only`` (they read SQLite files or
pragmas) are left out of a PostgreSQL run too.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import shutil
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from carecall.core.db import make_engine, make_sessionmaker
from carecall.core.migrate import upgrade
from device_gateway.models import Device
from dispatcher.registry.models import Home, Resident
from tests.support.registry import add_station_chain

NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)

T = TypeVar("T")
BACKENDS = ("sqlite", "postgresql")
PG_ADMIN_URL = os.environ.get("CARECALL_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        action="store",
        dest="carecall_db",
        default=None,
        choices=BACKENDS,
        help="database behind the db_url/maker fixtures: sqlite (default) or postgresql; "
        "the environment variable CARECALL_TEST_DB sets the default",
    )


def db_backend_of(config: pytest.Config) -> str:
    chosen = config.getoption("carecall_db") or os.environ.get("CARECALL_TEST_DB") or "sqlite"
    if chosen not in BACKENDS:
        raise pytest.UsageError(f"CARECALL_TEST_DB={chosen!r}: expected one of {', '.join(BACKENDS)}")
    return str(chosen)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only: needs SQLite itself (its files or pragmas); left out of a --db postgresql run",
    )
    db_backend_of(config)  # a bad CARECALL_TEST_DB is a usage error before anything runs


def pytest_report_header(config: pytest.Config) -> str:
    backend = db_backend_of(config)
    if backend == "postgresql":
        server = make_url(PG_ADMIN_URL).render_as_string(hide_password=True)
        return f"database: postgresql at {server} (tests that use no database are deselected)"
    return "database: sqlite"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL keep only the tests whose fixtures reach a database."""
    if db_backend_of(config) != "postgresql":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        names = getattr(item, "fixturenames", ())
        uses_db = "databases" in names or "pg_databases" in names
        (keep if uses_db and not item.get_closest_marker("sqlite_only") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Collect the last test's garbage before this one starts, then freeze what is left.

    The suite keeps about 1.8 million objects alive by its end (modules, apps, session
    fixtures), and a full collection that scans them all took 2-3 s here. When one fell
    inside a test that runs against the clock (a simulated county at x600, a power cut of
    1.2 real seconds) the event loop stood still that long and the test failed on a
    machine with nothing wrong with the code (CI, 2026-12-07: a run "ended" at 1,855 of 600
    simulated seconds). Frozen objects are never scanned again, so each collection only
    looks at what the previous test left and no collection inside a test can take seconds.
    """
    del item
    gc.collect()
    gc.freeze()


# ------------------------------------------------------------------ databases


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# What a migrated schema looks like; a test database whose schema changed is not reused.
_SCHEMA_FINGERPRINT = """
SELECT md5(coalesce(string_agg(x, ';' ORDER BY x), '')) FROM (
  SELECT c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':'
         || a.attnotnull || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS x
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
     AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL SELECT pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
   WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL SELECT conrelid::regclass::text || ':' || conname || ':' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
) s
"""


@dataclass(frozen=True)
class _Snapshot:
    """What a freshly migrated PostgreSQL database holds: its schema's fingerprint, the
    rows the migrations wrote (binary COPY) and where each sequence stands."""

    fingerprint: str
    tables: tuple[str, ...]
    rows: dict[str, bytes]
    sequences: tuple[tuple[str, int, bool], ...]


class _PgServer:
    """Admin work on the PostgreSQL server, on an event loop of its own: fixtures are
    synchronous and each test's loop belongs to pytest-asyncio."""

    def __init__(self, admin_url: str) -> None:
        import asyncpg

        self._dsn = admin_url.replace("postgresql://", "postgres://", 1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-admin", daemon=True)
        self._thread.start()
        self._admin: Any = self.run(asyncpg.connect(self._dsn))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(300)

    def url(self, name: str) -> str:
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    def execute(self, sql: str) -> None:
        self.run(self._execute(sql))

    async def _execute(self, sql: str, *args: Any) -> None:
        """On the admin connection, opened again when the server closed it: the chaos
        suite restarts PostgreSQL, and every test after it must still get its database."""
        import asyncpg

        if self._admin.is_closed():
            self._admin = await asyncpg.connect(self._dsn)
        try:
            await self._admin.execute(sql, *args)
        except (asyncpg.exceptions.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError, OSError):
            self._admin = await asyncpg.connect(self._dsn)
            await self._admin.execute(sql, *args)

    async def _connect(self, name: str) -> Any:
        import asyncpg

        return await asyncpg.connect(self._dsn.rsplit("/", 1)[0] + f"/{name}")

    async def snapshot(self, name: str) -> _Snapshot:
        conn = await self._connect(name)
        try:
            tables = tuple(
                r[0]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
            )
            rows: dict[str, bytes] = {}
            for table in tables:
                if await conn.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{table}")'):
                    out = io.BytesIO()
                    await conn.copy_from_table(table, output=out, format="binary")
                    rows[table] = out.getvalue()
            sequences = []
            for (seq,) in await conn.fetch(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1"
            ):
                at = await conn.fetchrow(f'SELECT last_value, is_called FROM "{seq}"')
                sequences.append((str(seq), int(at[0]), bool(at[1])))
            fingerprint = str(await conn.fetchval(_SCHEMA_FINGERPRINT))
            return _Snapshot(fingerprint, tables, rows, tuple(sequences))
        finally:
            await conn.close()

    async def keep_insertion_order(self, name: str, snap: _Snapshot) -> None:
        """Rows deleted between tests stay as dead tuples; with autovacuum off on a reused
        copy nothing reuses their space, so new rows follow each other as on a fresh one."""
        conn = await self._connect(name)
        try:
            for table in snap.tables:
                await conn.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
        finally:
            await conn.close()

    async def reset(self, name: str, snap: _Snapshot) -> bool:
        """Put a test's database back as the snapshot found it; False (and nothing done)
        when its schema changed."""
        await self._execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        conn = await self._connect(name)
        try:
            if await conn.fetchval(_SCHEMA_FINGERPRINT) != snap.fingerprint:
                return False
            async with conn.transaction():
                # replica: no foreign-key triggers, so the tables empty in any order
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute("; ".join(f'DELETE FROM "{t}"' for t in snap.tables))
                for table, data in snap.rows.items():
                    await conn.copy_to_table(table, source=io.BytesIO(data), format="binary")
                for seq, value, called in snap.sequences:
                    await conn.execute(f"SELECT setval('\"{seq}\"', {value}, {called})")
            return True
        finally:
            await conn.close()

    def close(self) -> None:
        try:
            self.run(self._admin.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(60)
            self._loop.close()


class Databases:
    """Fresh migrated databases for tests, from a template migrated once per run.

    SQLite: the template is a file and each database a copy of it, deleted after the test.
    PostgreSQL: the template is a database ``carecall_tmpl_<hex>``; a test gets a copy of
    it (``CREATE DATABASE … TEMPLATE``) that, once the test is done, is emptied and given
    the template's own rows and sequence values again, ready for the next test (autovacuum
    is off on such a copy, so rows come back in insertion order as on a fresh one). Making
    and dropping a database per test would cost about a second each on a busy server
    and, since every DROP DATABASE forces a checkpoint, stall the tests running then.
    A copy whose schema a test changed is dropped instead. Everything is dropped at the end.
    """

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self._owned: list[str] = []
        self._copies: set[str] = set()  # copies of the template (reusable once reset)
        self._clean: list[str] = []  # reset copies waiting for a test
        self._pg: _PgServer | None = None
        if backend == "postgresql":
            self._pg = _PgServer(PG_ADMIN_URL)
            self.template = self._pg.url(f"carecall_tmpl_{uuid.uuid4().hex[:12]}")
            self._pg.execute(f'CREATE DATABASE "{_db_name(self.template)}"')
        else:
            self.template = f"sqlite:///{workdir / 'template.db'}"
        self._owned.append(self.template)
        try:
            upgrade(self.template)
            if self._pg is not None:
                self._snapshot = self._pg.run(self._pg.snapshot(_db_name(self.template)))
        except BaseException:
            self.close()
            raise

    def create(self, like: str | None = None, *, reuse: bool = True) -> str:
        """A database holding what ``like`` (default: the freshly migrated template) holds.
        ``like`` must have no open connections. ``reuse=False``: on PostgreSQL a copy of
        its own, dropped (not reused) afterwards, with autovacuum as in production (the
        integration tests' processes run long enough to need it)."""
        if self._pg is not None:
            reusable = like is None and reuse
            if reusable and self._clean:
                return self._clean.pop()
            url = self._pg.url(f"carecall_t_{uuid.uuid4().hex[:12]}")
            source = like or self.template
            self._pg.execute(f'CREATE DATABASE "{_db_name(url)}" TEMPLATE "{_db_name(source)}"')
            if reusable:
                self._pg.run(self._pg.keep_insertion_order(_db_name(url), self._snapshot))
                self._copies.add(url)
        else:
            src = Path((like or self.template).removeprefix("sqlite:///"))
            dest = self.workdir / f"{uuid.uuid4().hex[:12]}.db"
            # A closed SQLite database is normally checkpointed, but copy a left-over WAL too.
            for suffix in ("", "-wal"):
                if src.with_name(src.name + suffix).exists():
                    shutil.copyfile(src.with_name(src.name + suffix), dest.with_name(dest.name + suffix))
            url = f"sqlite:///{dest}"
        self._owned.append(url)
        return url

    def drop(self, url: str) -> None:
        """The caller is done with this database: reuse it (PostgreSQL) or delete it."""
        if self._pg is not None:
            if url in self._copies and self._pg.run(self._pg.reset(_db_name(url), self._snapshot)):
                self._clean.append(url)
                return
            self._copies.discard(url)
            self._pg.execute(f'DROP DATABASE IF EXISTS "{_db_name(url)}" WITH (FORCE)')
        else:
            path = Path(url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        if url in self._owned:
            self._owned.remove(url)

    def close(self) -> None:
        """Drop every database made here, the template last."""
        try:
            self._copies.clear()
            for url in reversed(list(self._owned)):
                self.drop(url)
        finally:
            if self._pg is not None:
                self._pg.close()


def _db_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _open_databases(backend: str, workdir: Path) -> Databases:
    if backend == "postgresql":
        url = make_url(PG_ADMIN_URL)
        host, port = url.host or "127.0.0.1", url.port or 5432
        if not _reachable(host, port):
            msg = f"PostgreSQL is not reachable on {host}:{port} (CARECALL_TEST_PG_ADMIN)"
            if os.environ.get("CI"):
                pytest.fail(f"{msg}: CI must run the PostgreSQL tests against the real server")
            pytest.skip(f"{msg}: tests on PostgreSQL need it")
    return Databases(backend, workdir)


@pytest.fixture(scope="session")
def pg_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    """PostgreSQL databases whatever --db says (the integration tests' pg_url uses them)."""
    dbs = _open_databases("postgresql", tmp_path_factory.mktemp("pg"))
    yield dbs
    dbs.close()


@pytest.fixture(scope="session")
def db_backend(pytestconfig: pytest.Config) -> str:
    """The backend --db (or CARECALL_TEST_DB) asked for: sqlite or postgresql."""
    return db_backend_of(pytestconfig)


@pytest.fixture(scope="session")
def databases(
    db_backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Databases]:
    """The databases of the backend chosen with --db."""
    if db_backend == "postgresql":
        dbs: Databases = request.getfixturevalue("pg_databases")
        yield dbs
        return
    dbs = _open_databases("sqlite", tmp_path_factory.mktemp("sqlite"))
    yield dbs
    dbs.close()


@pytest.fixture
def db_url(databases: Databases) -> Iterator[str]:
    """A fresh migrated database for this test, on the backend chosen with --db."""
    url = databases.create()
    yield url
    databases.drop(url)


@pytest.fixture
def sqlite_url(db_url: str, db_backend: str) -> str:
    """The test's database when it is SQLite; tests that need SQLite itself are marked
    sqlite_only, every other test asks for db_url."""
    if db_backend != "sqlite":
        pytest.fail(
            "sqlite_url asked for in a --db postgresql run: use db_url, or mark the test "
            "sqlite_only if it needs SQLite itself"
        )
    return db_url


@pytest.fixture
async def maker(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


# ------------------------------------------------------------------ sign-in


@pytest.fixture
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Password hashing at its cheapest, for tests that sign users in many times (not
    for tests of the hashing itself). Use with ``pytest.mark.usefixtures``."""
    from argon2 import PasswordHasher

    import dispatcher.auth.passwords as auth

    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


# ------------------------------------------------------------------ registry


async def add_small_registry(
    maker: async_sessionmaker[AsyncSession],
    devices: dict[str, str],
    *,
    secret_hashes: dict[str, str] | None = None,
    heartbeat_s: int = 60,
) -> None:
    """One county → street → community chain, one home with one resident, and devices."""
    async with maker() as s, s.begin():
        await add_station_chain(s)
        s.add(Home(id="h1", station_id="cm1", address="建设路1号", lat=32.692, lon=112.852))
        await s.flush()
        s.add(
            Resident(
                id="r1",
                home_id="h1",
                name="王秀英",
                sex="F",
                birth_date=date(1940, 3, 1),
                capacity_level=3,
                living_alone=True,
                conditions=["高血压"],
            )
        )
        for dev_id, kind in devices.items():
            s.add(
                Device(
                    id=dev_id,
                    home_id="h1",
                    kind=kind,
                    heartbeat_s=heartbeat_s,
                    enabled=True,
                    secret_hash=(secret_hashes or {}).get(dev_id),
                    created_at=NOW,
                )
            )

"""Database engine and sessions. The database is the record of truth.

Runtime uses SQLAlchemy's asyncio engine (aiosqlite / asyncpg); Alembic migrations run
through the same engine so one URL serves both.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, String, TypeDecorator, event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from carecall.core.sqlite_gate import install_write_gate

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


ID = String(64)
"""The type of every text primary key (stations, homes, devices...)."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def async_url(url: str) -> str:
    """Map a plain URL to the async driver we ship."""
    if url.startswith("sqlite:///") or url == "sqlite://":
        return "sqlite+aiosqlite" + url[len("sqlite") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


class RollbackOnClose(sqlite3.Connection):
    """sqlite3's connection, rolled back before it closes.

    Closing a connection while one of its statements is still active (a write's RETURNING
    or a read whose rows nobody fetched) does not end its transaction: ``sqlite3_close_v2``
    keeps it as a "zombie", holding the database's write lock, until that statement is
    finalized, which is when the garbage collector frees its cursor (perhaps never).
    aiosqlite makes exactly that of a cancelled task: the statement was handed to the
    connection's thread and runs anyway once the lock is free, unread; SQLAlchemy then
    invalidates the connection and closes it, and the cursor lives on in the
    cancellation's traceback. Every other writer then got "database is locked" for good
    (the demo history's freeze, tests/carecall/core/test_db_cancel.py). ROLLBACK aborts
    the active statements and releases the lock, so a close always rolls back first."""

    def close(self) -> None:
        with suppress(sqlite3.Error):  # closed already, or nothing left to undo
            if self.in_transaction:
                self.rollback()
        super().close()


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    aurl = async_url(url)
    if is_sqlite(aurl):
        connect_args = {"timeout": 30, "factory": RollbackOnClose}
        engine = create_async_engine(aurl, connect_args=connect_args, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL lets the API read while the gateway writes. FULL sync: a device is
            # acked once its event commits, so the commit must survive a power cut, not
            # only a process kill (NORMAL in WAL mode can lose the last commits to an OS
            # crash). Measured cost here: ~0.2 ms p99 per commit (issue 15).
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # one writer at a time, queued in the loop with alarms first (carecall/core/sqlite_gate.py)
        install_write_gate(engine.sync_engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    ping_idle_s = kwargs.pop("ping_idle_s", PING_IDLE_S)
    pg_args: dict[str, Any] = dict(kwargs.pop("connect_args", {}))
    settings: dict[str, str] = {**CUSTOM_PLANS, **pg_args.get("server_settings", {})}
    engine = create_async_engine(aurl, connect_args={**pg_args, "server_settings": settings}, **kwargs)
    if settings["plan_cache_mode"] == CUSTOM_PLANS["plan_cache_mode"]:
        _custom_plans.add(engine.sync_engine)
    if not kwargs.get("pool_pre_ping"):
        ping_when_idle(engine, ping_idle_s)
    return engine


# Every PostgreSQL connection plans each statement for its parameters (issue 15). The
# driver prepares every statement, and after five runs PostgreSQL may switch one to a
# generic plan, made once, blind to the values and to how big the tables have grown since:
# twice here that was far worse than planning (the intake's claim went quadratic, an
# oversight report took 2.4 s instead of 1.6), and IN lists sent as one array
# (carecall/core/one_of.py) are planned for an array of unknown size. Planning a statement
# of ours costs tens of microseconds; in the bench's quiet phase the generic plans cost
# PostgreSQL ~5 % of a core more and left escalation timers later (docs/performance.md).
CUSTOM_PLANS = {"plan_cache_mode": "force_custom_plan"}
_custom_plans: weakref.WeakSet[Engine] = weakref.WeakSet()


def plans_per_statement(bind: Engine | Connection) -> bool:
    """Whether ``bind``'s connections already plan every statement for its parameters."""
    engine = bind.engine if isinstance(bind, Connection) else bind
    return engine in _custom_plans


# A pooled connection idle for longer than this is pinged before it is handed out.
PING_IDLE_S = 2.0
_CHECKED_IN = "carecall.checked_in"


def ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a pooled PostgreSQL connection before handing it out only when it sat idle for
    more than ``idle_s``: a connection the server dropped meanwhile (a restart) is then
    replaced before anyone uses it.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one round trip more for every
    transaction (the gateway's event commit, each dispatcher round), each a socket write
    that hands the CPU to a PostgreSQL backend on a shared core. A connection used
    moments ago is almost surely alive; if the server went away in between, the
    transaction fails as a disconnect, SQLAlchemy invalidates the pool's older connections,
    and the loops retry (the gateway's writer, the dispatcher's backoff)."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_CHECKED_IN)
        if since is None or time.monotonic() - since <= idle_s:
            return  # new, or used moments ago
        try:
            dbapi_conn.ping()
        except Exception as exc:
            # the pool discards this connection and hands out a new one
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_scope(maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on error."""
    async with maker() as session, session.begin():
        yield session

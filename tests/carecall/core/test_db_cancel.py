"""A task cancelled in the middle of a SQLite write never leaves the database locked.

aiosqlite runs every statement in a thread of its own: a task cancelled while its statement
waits for SQLite's write lock (another writer holds it) stops waiting, but the statement
still runs once the lock is free. Nobody reads its rows then, so it stays active, in a
transaction holding the write lock; SQLAlchemy invalidates the connection and closes it.
Closing a connection with an active statement does not end its transaction
(``sqlite3_close_v2`` leaves a "zombie" until the statement is finalized, that is until
the garbage collector frees the cursor, which the cancellation's traceback keeps alive):
every later writer got "database is locked" for good. This froze the demo's history when
its phase stopped (carecall/shell/demo.py, ``Phase.close``) while the dispatcher's visits
round or timers were writing. The app's engine rolls back before a connection closes
(carecall/core/db.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from carecall.core.db import make_engine, make_sessionmaker

pytestmark = pytest.mark.sqlite_only

# writes that stay active when nobody reads their rows: RETURNING, as in the ORM's inserts
# (the visits round's new plans and visits) and the audit head's update
STATEMENTS = {
    "update_returning": "UPDATE t SET v = v + 1 RETURNING v",
    "insert_returning": "INSERT INTO t (v) VALUES (10), (11) RETURNING id",
}


@pytest.mark.parametrize("kind", sorted(STATEMENTS))
async def test_a_cancelled_writer_leaves_no_lock_behind(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "cancel.db"
    engine = make_engine(f"sqlite:///{path}")
    maker = make_sessionmaker(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"))
            await conn.execute(text("INSERT INTO t (id, v) VALUES (1, 0)"))

        # another writer holds the lock: the task's statement waits in aiosqlite's thread
        blocker = sqlite3.connect(path, isolation_level=None, timeout=5)
        blocker.execute("BEGIN IMMEDIATE")
        statement_started = asyncio.Event()

        async def writer() -> None:
            async with maker() as s, s.begin():
                statement_started.set()
                await s.execute(text(STATEMENTS[kind]))

        task = asyncio.create_task(writer())
        await asyncio.wait_for(statement_started.wait(), 5)
        await asyncio.sleep(0.3)  # the statement is queued behind the blocker's lock
        task.cancel()
        await asyncio.sleep(0.05)
        blocker.execute("COMMIT")  # now the cancelled task's statement runs, unread
        blocker.close()
        # kept, as a stopped phase keeps its tasks' outcomes: the traceback and its cursor live on
        outcome = await asyncio.gather(task, return_exceptions=True)
        assert isinstance(outcome[0], asyncio.CancelledError)

        # the next writer gets the lock at once (not after the app's 30 s busy timeout)
        probe = sqlite3.connect(path, isolation_level=None, timeout=2)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("UPDATE t SET v = v + 100 WHERE id = 1")
            probe.execute("COMMIT")
            # the cancelled transaction was rolled back, not committed
            assert probe.execute("SELECT v FROM t WHERE id = 1").fetchone() == (100,)
            assert probe.execute("SELECT count(*) FROM t").fetchone() == (1,)
        finally:
            probe.close()
        del outcome
    finally:
        await engine.dispose()


async def test_writes_still_commit_and_roll_back(tmp_path: Path) -> None:
    """Rolling back before a close changes nothing for a connection that ends its
    transactions: commits stay, a rollback undoes, the pool's connections are reused."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plain.db'}")
    maker = make_sessionmaker(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"))
        async with maker() as s, s.begin():
            await s.execute(text("INSERT INTO t (id, v) VALUES (1, 1)"))
        with pytest.raises(RuntimeError):
            async with maker() as s, s.begin():
                await s.execute(text("INSERT INTO t (id, v) VALUES (2, 2)"))
                raise RuntimeError("undo")
        await engine.dispose()  # closes the pooled connections (no transaction open)
        async with maker() as s:
            assert (await s.execute(text("SELECT id, v FROM t"))).all() == [(1, 1)]
    finally:
        await engine.dispose()

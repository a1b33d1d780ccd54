"""SQLite's one writer at a time, queued in the event loop, alarms first (issue 15).

SQLite lets one connection write at a time. In the one-process embedded target the
gateway's event writer, the dispatcher's loops (intake, timers, outbox), the device-state
flush and the web app all write through one engine, each on its own aiosqlite thread. A
connection that finds the write lock taken waits in SQLite's busy handler, which sleeps
1, 2, 5 … up to 100 ms between tries: whoever polls first after a commit wins, not whoever
waited longest. With the loop saturated (a storm), every transaction holds the lock for
many loop turns, and the gateway's commits lost that race for seconds at a time while the
dispatcher's loops kept writing: 2-3 connections were found asleep in
``sqlite3InvokeBusyHandler`` in every ``py-spy dump`` of the storm, and the storm's 5,000
alarms got no ``received`` ack within the bench's 60 s (docs/performance.md).

``WriteGate`` queues the writers in the event loop instead: a connection takes the gate
just before its first write statement (the moment SQLite would take its write lock) and
gives it back at commit or rollback (or when the connection is returned, invalidated or
closed), handing it straight to the next writer. Writers marked with ``alarm_first()``
(the gateway's event commits: a device waits for their ``received`` ack) go before every
other waiting writer; the others keep their order. Nothing is skipped and no commit is
relaxed: ``synchronous=FULL`` and ack-after-commit stand. A writer that waits longer than
``wait_s`` goes on without the gate and meets SQLite's own busy timeout, as before (a
task that writes in a second session while its first one holds the lock deadlocks on
SQLite anyway; it must not hang on the gate forever).

Only engines on SQLite get a gate (``carecall.core.db.make_engine``); PostgreSQL has row
locks and many writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.util import await_only

log = structlog.get_logger("carecall.db")

__all__ = ["WriteGate", "alarm_first", "install_write_gate", "write_gate"]

_ALARM: ContextVar[bool] = ContextVar("carecall_sqlite_alarm_first", default=False)
# Statements that never take SQLite's write lock; every other statement may.
_READS = ("SELECT", "PRAGMA", "EXPLAIN")
_WRITE_WORDS = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_GATES: weakref.WeakKeyDictionary[Engine, WriteGate] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def alarm_first() -> Iterator[None]:
    """Writes made inside go before every other waiting writer (the alarm path)."""
    token = _ALARM.set(True)
    try:
        yield
    finally:
        _ALARM.reset(token)


class WriteGate:
    """One holder at a time; waiters served alarms first, then in arrival order."""

    def __init__(self, wait_s: float = 30.0) -> None:
        self.wait_s = wait_s
        self._holder: object | None = None
        self._alarms: deque[tuple[object, asyncio.Future[None]]] = deque()
        self._others: deque[tuple[object, asyncio.Future[None]]] = deque()
        self.handovers = 0  # times the gate went to a waiter (for tests and the profile)
        self.timeouts = 0

    @property
    def holder(self) -> object | None:
        return self._holder

    @property
    def waiting(self) -> int:
        return sum(1 for q in (self._alarms, self._others) for _o, f in q if not f.done())

    def holds(self, owner: object) -> bool:
        return self._holder is owner

    async def acquire(self, owner: object, *, alarm: bool = False) -> bool:
        """Wait for the gate; False when ``wait_s`` passed first (the caller goes on
        without it). Re-entrant for its holder."""
        if self._holder is owner:
            return True
        if self._holder is None and self.waiting == 0:
            self._holder = owner
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (owner, fut)
        (self._alarms if alarm else self._others).append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except TimeoutError:
            self._forget(entry)
            if self._holder is owner:  # handed over just as the wait ran out: keep it
                return True
            self.timeouts += 1
            log.warning("db.write_gate_timeout", wait_s=self.wait_s, holder=repr(self._holder)[:80])
            return False
        except BaseException:
            self._forget(entry)
            if self._holder is owner:  # handed over, then cancelled: pass it on
                self.release(owner)
            raise
        return True

    def release(self, owner: object) -> None:
        """Give the gate back (a no-op unless ``owner`` holds it) to the next waiter."""
        if self._holder is not owner:
            return
        self._holder = None
        for q in (self._alarms, self._others):
            while q:
                nxt, fut = q.popleft()
                if fut.done():  # cancelled or timed out meanwhile
                    continue
                self._holder = nxt
                self.handovers += 1
                fut.set_result(None)
                return

    def _forget(self, entry: tuple[object, asyncio.Future[None]]) -> None:
        for q in (self._alarms, self._others):
            with contextlib.suppress(ValueError):
                q.remove(entry)


def _writes(statement: str, context: Any) -> bool:
    """Whether a statement may take SQLite's write lock. A compiled statement says so
    itself (a ``WITH … SELECT`` is a read); a textual one by its first word."""
    if context is not None and context.compiled is not None and not context.is_text:
        return bool(context.isinsert or context.isupdate or context.isdelete or context.isddl)
    head = statement.lstrip()[:8].upper()
    if head.startswith("WITH"):
        return any(w in statement.upper() for w in _WRITE_WORDS)
    return not head.startswith(_READS)


def install_write_gate(engine: Engine, gate: WriteGate | None = None) -> WriteGate:
    """Put ``engine``'s (the sync engine of an async SQLite engine) writers behind ``gate``."""
    gate = gate or WriteGate()
    _GATES[engine] = gate

    @event.listens_for(engine, "before_cursor_execute")
    def _before(
        conn: Connection, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
    ) -> None:
        owner = conn.connection.dbapi_connection
        if owner is None or gate.holds(owner) or not _writes(statement, context):
            return
        await_only(gate.acquire(owner, alarm=_ALARM.get()))

    def _release_conn(conn: Connection) -> None:
        if conn.invalidated or conn.closed:
            return  # (``conn.connection`` would reconnect) the pool's events released it
        owner = conn.connection.dbapi_connection
        if owner is not None:
            gate.release(owner)

    def _release_dbapi(dbapi_conn: Any, *_args: Any) -> None:
        gate.release(dbapi_conn)

    event.listen(engine, "commit", _release_conn)
    event.listen(engine, "rollback", _release_conn)
    for name in ("checkin", "invalidate", "soft_invalidate", "close", "close_detached", "detach"):
        event.listen(engine.pool, name, _release_dbapi)
    return gate


def write_gate(engine: Engine) -> WriteGate | None:
    """The gate of a (sync) engine, if it has one."""
    return _GATES.get(engine)

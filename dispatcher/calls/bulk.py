"""Rows the dispatcher's loops write and never read back as objects (timers, outbox
notifications): kept as plain dicts and written with one Core INSERT per table, not as
ORM objects flushed by the unit of work.

An alarm writes about twenty rows; as ORM objects each costs the identity map, the
unit of work's sort and a RETURNING of its id, which nobody reads. A loop turns this on
for its transaction with :func:`defer`; elsewhere (an operator's action) :func:`add`
hands the row to the session as an ORM object, as before.

At commit the rows go in together: on PostgreSQL every table's in one statement
(carecall/core/row_batch.py); when the transaction chains its audit rows at commit, that
statement comes just before the chain's lock (dispatcher/audit/service.py ``_write_head``).

Read-your-writes holds as with the ORM's flush: the buffered rows are written before
any later statement of the transaction that touches their tables (so a cancel in the
same intake batch finds the timers of the call it closes), and at the latest before the
commit. A rollback drops them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql import ClauseElement, TableClause
from sqlalchemy.sql.util import find_tables

from carecall.core import row_batch
from carecall.core.db import Base
from dispatcher.audit import service as audit

__all__ = ["add", "add_object", "defer", "deferring", "draw_ids"]

_OBJECTS = "carecall.bulk_objects"  # set while ORM objects given to add_object wait


def defer(session: AsyncSession) -> None:
    """Buffer this transaction's rows given to :func:`add`; call at its start."""
    sync = session.sync_session
    row_batch.buffer(sync, start=True)
    if not event.contains(sync, "before_commit", _write_all):
        event.listen(sync, "before_commit", _write_all)
        event.listen(sync, "do_orm_execute", _before_statement)
        event.listen(sync, "after_commit", _drop)
        event.listen(sync, "after_rollback", _drop)


def add(session: AsyncSession, model: type[Base], row: dict[str, Any]) -> None:
    """A new row of ``model``: buffered, written with the rest at commit, in a deferring
    transaction, else added to the session as an object."""
    pending = row_batch.buffer(session.sync_session)
    if pending is None:
        session.add(model(**row))
        return
    pending.setdefault(row_batch.table_of(model), []).append(row)


def deferring(session: AsyncSession) -> bool:
    """Whether this transaction buffers rows (:func:`defer`)."""
    return row_batch.buffer(session.sync_session) is not None


async def draw_ids(session: AsyncSession, table: str, n: int) -> list[int]:
    """``n`` ids from the sequence of ``table``'s id column, in one statement (PostgreSQL):
    rows given their ids beforehand go in together (:func:`add_object`) instead of one
    INSERT … RETURNING each. An id drawn and not used is a gap, as a rolled-back insert
    leaves."""
    drawn = await session.scalars(
        text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
        {"t": table, "n": n},
    )
    return [int(i) for i in drawn]


def add_object(session: AsyncSession, obj: Base) -> None:
    """A new ORM object whose INSERT, in a deferring transaction, waits for the next
    statement of any kind, a flush or the commit: objects added back to back (a storm's
    new calls, their ids drawn beforehand) then go in as one INSERT. Any later statement
    sees them, as it would after the ORM's own autoflush. Elsewhere: added to the session."""
    session.add(obj)
    if row_batch.buffer(session.sync_session) is not None:
        session.info[_OBJECTS] = True


def _flush_objects(session: Session) -> None:
    if session.info.pop(_OBJECTS, False):
        session.flush()


def _write(session: Session, tables: set[TableClause] | None = None) -> None:
    row_batch.write(session, row_batch.take(session, tables))


def _write_all(session: Session) -> None:
    _flush_objects(session)  # the buffered rows may refer to them (a new call's timers)
    if audit.chains_at_commit(session):
        return  # written by audit's _write_head, just before it takes the chain's lock
    _write(session)


def _before_statement(state: ORMExecuteState) -> None:
    """Before any statement: the objects of add_object; before a statement that reads or
    changes a buffered table: its rows too."""
    _flush_objects(state.session)
    pending = row_batch.buffer(state.session)
    if not pending:
        return
    statement = state.statement
    if not isinstance(statement, ClauseElement):
        return
    touched = set(find_tables(statement, include_crud=True, include_joins=True)) & set(pending)
    if touched:
        _write(state.session, touched)


def _drop(session: Session, *_: Any) -> None:
    """After the commit (written) or a rollback (gone): the next transaction of this
    session adds objects again unless it defers too."""
    row_batch.stop(session)
    session.info.pop(_OBJECTS, None)

"""Appending to and verifying the hash-chained audit log (the chain itself: dispatcher.audit.chain).

Appends lock the single ``audit_head`` row first (an UPDATE, which takes the row lock on
PostgreSQL and the write lock on SQLite), so concurrent dispatcher copies append one after
another and the chain never forks. The new head is written once, just before the commit,
and the rows go in with the transaction's other inserts. Rows are never updated or deleted
by the code.

The dispatcher's own loops (intake, timers, outbox) use :func:`defer`: their rows are
chained at commit instead. The lock is then taken last, in ``before_commit``, and held
only for the head update, the audit rows' insert and the commit, rather than for the
whole transaction: with one global chain, that lock was busy nearly all the time at 100
alarms a second, and every loop (and every copy) waited in line for it. The chain is the
same: seq order is still commit order, because the lock is held until the commit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from carecall.core import row_batch
from dispatcher.audit.chain import ChainRow, ChainVerdict, next_row, verify
from dispatcher.audit.models import AuditHead, AuditRow

_HEAD_KEY = "carecall.audit_head"


_DIRTY_KEY = "carecall.audit_head_dirty"
_DEFER_KEY = "carecall.audit_deferred"  # rows to chain at commit (see defer)


def _head_update() -> Update:
    """An UPDATE of the chain head. No AuditHead object is ever loaded into a session (the
    head is read as columns), so there is nothing in memory to synchronize: without
    ``synchronize_session=False`` the ORM would evaluate the statement's criteria against
    every object the session holds, twice per transaction — a tenth of the dispatcher's
    CPU during a storm, when a timer pass holds hundreds of objects."""
    return update(AuditHead).where(AuditHead.id == 1).execution_options(synchronize_session=False)


# The chain's head locked (a no-op UPDATE) and read, as one statement object built once:
# SQLAlchemy computes a statement's cache key anew for every new object, and this one
# runs once per committing transaction of every loop.
_LOCK_AND_READ_HEAD = _head_update().values(seq=AuditHead.seq).returning(AuditHead.seq, AuditHead.hash)
_LOCK_HEAD = _head_update().values(seq=AuditHead.seq)


# The chain's new head, after a deferring transaction's rows (written with them).
_SET_HEAD = "UPDATE audit_head SET seq = :head_seq, hash = :head_hash WHERE id = 1"


def _write_head(session: Session) -> None:
    """before_commit: store the chain head once per transaction, not once per row; in
    deferred mode, lock the head now and chain the transaction's rows.

    The rows the loops buffered (carecall/core/row_batch.py: timers, notifications,
    intake decisions, call events) go in first, before the head's lock, as one statement
    on PostgreSQL; then the audit rows with the new head as one more. They took one round
    trip per table before the lock and two after it. The lock is held for the audit rows
    only: with the buffered rows after it as well (one statement in all), a storm's timer
    passes waited longer for the intake's commits (timers p99 up in two sittings of
    alternating runs, docs/performance.md). The session's own objects are flushed first
    (the buffered rows refer to new calls)."""
    deferred = _DEFER_KEY in session.info
    pending: list[dict[str, Any]] | None = session.info.pop(_DEFER_KEY, None)
    batches = row_batch.take(session) if deferred else []
    if batches or pending:
        session.flush()
    row_batch.write(session, batches)
    if pending:
        seq, prev = session.execute(_LOCK_AND_READ_HEAD).one()
        for row in pending:
            link = next_row(
                seq,
                prev,
                call_id=row["call_id"],
                at=row["at"],
                kind=row["kind"],
                actor=row["actor"],
                station_id=row["station_id"],
                detail=row["detail"],
            )
            row["seq"], row["prev_hash"], row["hash"] = link.seq, link.prev_hash, link.hash
            seq, prev = link.seq, link.hash
        # Core rows, in chain order: nothing reads them back as objects, so the unit of
        # work (and a RETURNING of every id) is skipped
        row_batch.write(
            session,
            [(row_batch.table_of(AuditRow), pending)],
            _SET_HEAD,
            {"head_seq": seq, "head_hash": prev},
        )
        return
    if session.info.pop(_DIRTY_KEY, False):
        seq, digest = session.info[_HEAD_KEY]
        session.execute(_head_update().values(seq=seq, hash=digest))


def _drop_head(session: Session, *_: Any) -> None:
    """After commit or rollback the cached head is no longer ours to trust."""
    session.info.pop(_HEAD_KEY, None)
    session.info.pop(_DIRTY_KEY, None)
    session.info.pop(_DEFER_KEY, None)


def _listen(session: AsyncSession) -> None:
    sync = session.sync_session
    if not event.contains(sync, "before_commit", _write_head):
        event.listen(sync, "before_commit", _write_head)
        event.listen(sync, "after_commit", _drop_head)
        event.listen(sync, "after_rollback", _drop_head)


def chains_at_commit(session: Session) -> bool:
    """Whether this transaction's audit rows are chained at commit (:func:`defer`): its
    buffered rows then go in with them (``_write_head``)."""
    return _DEFER_KEY in session.info


def defer(session: AsyncSession) -> None:
    """Chain this transaction's audit rows at commit, taking the chain lock only then.

    For transactions that read no audit rows they wrote themselves (the rows are not in
    the database before the commit) and that may take their row locks (calls, timers,
    notifications) before the chain's: every such writer then locks in the same order,
    rows first and the chain last, and holds the chain only for the commit. Call it at
    the start of the transaction; :func:`lock_head` is then a no-op."""
    if _HEAD_KEY in session.info:
        return  # the head is already locked: keep chaining as we go
    session.info[_DEFER_KEY] = []
    _listen(session)


async def _head(session: AsyncSession) -> list[Any]:
    """[seq, hash] of the chain head, locked for this transaction."""
    cached = session.info.get(_HEAD_KEY)
    if cached is not None:
        return list(cached)
    await session.execute(_LOCK_HEAD)
    head = (await session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).one()
    _listen(session)
    return [head.seq, head.hash]


async def lock_head(session: AsyncSession) -> None:
    """Take the chain's lock at the start of a transaction, before any call row: every
    writer then locks in the same order (head, then calls), so two dispatcher copies can
    never deadlock on a call and the head."""
    if _HEAD_KEY not in session.info and _DEFER_KEY not in session.info:
        session.info[_HEAD_KEY] = tuple(await _head(session))


async def append(
    session: AsyncSession,
    *,
    kind: str,
    at: datetime,
    actor: str,
    call_id: int | None = None,
    station_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditRow:
    """One fact for the log. In a deferring transaction (:func:`defer`) the row is kept as
    plain values, chained and inserted at commit; what is returned is then an unsaved
    copy without its seq and hashes."""
    body = dict(detail or {})
    deferred: list[dict[str, Any]] | None = session.info.get(_DEFER_KEY)
    if deferred is not None:
        # seq, prev_hash and hash are set at commit (_write_head), under the chain lock
        values = {"call_id": call_id, "at": at, "kind": kind, "actor": actor, "station_id": station_id}
        deferred.append({**values, "detail": body})
        return AuditRow(**values, detail=body)
    seq, prev = await _head(session)
    link = next_row(
        seq, prev, call_id=call_id, at=at, kind=kind, actor=actor, station_id=station_id, detail=body
    )
    row = AuditRow(
        seq=link.seq,
        call_id=call_id,
        at=at,
        kind=kind,
        actor=actor,
        station_id=station_id,
        detail=body,
        prev_hash=prev,
        hash=link.hash,
    )
    session.add(row)  # inserted with the transaction's other rows at the next flush
    session.info[_HEAD_KEY] = (link.seq, link.hash)
    session.info[_DIRTY_KEY] = True
    return row


def forget_head(session: AsyncSession) -> None:
    """Call after a rollback: the cached head is no longer true."""
    session.info.pop(_HEAD_KEY, None)


async def iter_rows(
    maker: async_sessionmaker[AsyncSession], *, upto: int | None = None, batch: int = 5000
) -> AsyncIterator[ChainRow]:
    last = 0
    while True:
        stmt = select(AuditRow).where(AuditRow.seq > last)
        if upto is not None:
            stmt = stmt.where(AuditRow.seq <= upto)
        async with maker() as s:
            rows = (await s.scalars(stmt.order_by(AuditRow.seq).limit(batch))).all()
        if not rows:
            return
        for r in rows:
            yield ChainRow(
                seq=r.seq,
                call_id=r.call_id,
                at=r.at,
                kind=r.kind,
                actor=r.actor,
                station_id=r.station_id,
                detail=r.detail,
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
        last = rows[-1].seq


async def verify_log(maker: async_sessionmaker[AsyncSession]) -> ChainVerdict:
    """Verify the chain up to the head as it is now, and that the head names its last row.

    The head is read first: a dispatcher still appending commits its rows and the new head
    together, so every row up to the head we read is committed, and later rows are simply
    not part of this check. (Reading the rows first and the head last would race with a
    live system and report rows as deleted.)"""
    async with maker() as s:
        head = (await s.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).one()
    rows = [r async for r in iter_rows(maker, upto=head.seq)]
    verdict = verify(rows)
    if not verdict.ok:
        return verdict
    last_seq = rows[-1].seq if rows else 0
    last_hash = rows[-1].hash if rows else head.hash
    if head.seq != last_seq or head.hash != last_hash:
        return ChainVerdict(
            ok=False,
            rows_checked=verdict.rows_checked,
            first_bad_seq=last_seq + 1 if head.seq > last_seq else last_seq,
            problem=f"chain head says seq {head.seq} but the log ends at seq {last_seq}: rows deleted from the end",
        )
    return verdict

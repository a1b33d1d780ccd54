"""New rows of several tables, written together (issue 15, the alarm lane).

A dispatcher loop buffers the rows it never reads back as objects (timers, outbox
notifications, intake decisions, audit rows: ``dispatcher.calls.bulk``,
``dispatcher.audit.service``) and writes them at commit. One INSERT per table is one
round trip per table; on two busy cores each round trip also waits for a core at both
ends (docs/performance.md, "Two cores, both busy"), and an intake round wrote five
tables that way. On PostgreSQL :func:`write` sends them as one statement instead: each
table's rows as one ``INSERT … SELECT * FROM unnest(…)`` (one array per column, so the
statement's text is the same whatever the number of rows, and the driver's prepared
statement is reused), joined by data-modifying CTEs, with an optional last statement
(the audit chain's head) as the main one. Foreign keys between the tables still hold:
PostgreSQL checks them at the end of the statement, when every part has run.

Elsewhere (SQLite) each table is one executemany INSERT, as before. On both, a key a row
leaves out gets its column's Python-side default, as a Core INSERT of that row alone
would give it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnDefault, Table, bindparam, insert, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

__all__ = ["Batch", "buffer", "statement", "stop", "table_of", "take", "write"]

Batch = tuple[Table, Sequence[Mapping[str, Any]]]

_KEY = "carecall.bulk_rows"  # this transaction's buffered rows: table -> rows


def table_of(model: Any) -> Table:
    """A mapped class's table, as a batch names it."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def buffer(session: Session, *, start: bool = False) -> dict[Table, list[dict[str, Any]]] | None:
    """This transaction's buffered rows by table (None when it does not buffer; ``start``
    begins buffering)."""
    if start:
        session.info.setdefault(_KEY, {})
    pending: dict[Table, list[dict[str, Any]]] | None = session.info.get(_KEY)
    return pending


def take(session: Session, tables: set[Any] | None = None) -> list[Batch]:
    """Remove and return the buffered rows (of ``tables`` only, if given), in the order
    their tables were first buffered."""
    pending = buffer(session)
    if not pending:
        return []
    return [(t, pending.pop(t)) for t in list(pending) if tables is None or t in tables]


def stop(session: Session) -> None:
    """The transaction ended: nothing is buffered any more."""
    session.info.pop(_KEY, None)


def _columns(table: Table, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, list[Any]]]:
    """Each column to write with its values, row by row: the columns the rows name, and
    the ones with a Python-side default (filled in as a Core INSERT would); a column with
    neither is left to the database (its sequence, its server default or NULL)."""
    named = set().union(*(r.keys() for r in rows))
    out: list[tuple[Any, list[Any]]] = []
    for col in table.columns:
        default = col.default if isinstance(col.default, ColumnDefault) else None
        if col.key not in named and default is None:
            continue
        values: list[Any] = []
        for row in rows:
            if col.key in row:
                values.append(row[col.key])
            elif default is None:
                values.append(None)
            elif default.is_clause_element:
                # a SQL expression as a default cannot go into a parameter array
                raise ValueError(f"{table.name}.{col.name}: a SQL expression default is not supported here")
            else:
                values.append(default.arg(None) if default.is_callable else default.arg)
        out.append((col, values))
    return out


# A statement's shape (its tables, their columns, the tail and the suffix) -> the one
# TextClause of that shape. Built once and reused, SQLAlchemy keeps its cache key and
# compiled form (a new TextClause is a new cache key, computed anew every time: 12 % of
# the gateway's event lane in the quiet phase, 4 % of the dispatcher, before this). The
# shapes are few (a loop writes the same tables and columns round after round); the
# bound keeps a caller with ever-new tail texts from growing it without end.
_SHAPES: dict[tuple[Any, ...], TextClause] = {}
_SHAPES_MAX = 512


def _shaped(shape: tuple[Any, ...], cols: list[list[Any]], tail: str | None, suffix: str) -> TextClause:
    """The statement of ``shape`` (each batch's columns ``cols``; ``tail``; ``suffix``)."""
    found = _SHAPES.get(shape)
    if found is not None:
        return found
    parts: list[str] = []
    binds: list[Any] = []
    for i, (table, table_cols) in enumerate(zip(shape[0], cols, strict=True)):
        names = []
        for j, col in enumerate(table_cols):
            name = f"rb{i}_{j}"
            names.append(f":{name}")
            binds.append(bindparam(name, type_=ARRAY(col.type)))
        column_list = ", ".join(f'"{col.name}"' for col in table_cols)
        parts.append(f'INSERT INTO "{table.name}" ({column_list}) SELECT * FROM unnest({", ".join(names)})')
    if tail is not None:
        main = tail
    elif parts:
        main = parts.pop() + suffix
    else:
        raise ValueError("nothing to write")
    ctes = ", ".join(f"rb{i} AS ({sql})" for i, sql in enumerate(parts))
    sql = f"WITH {ctes} {main}" if ctes else main
    stmt = text(sql).bindparams(*binds)
    if len(_SHAPES) >= _SHAPES_MAX:
        _SHAPES.clear()
    _SHAPES[shape] = stmt
    return stmt


def statement(
    batches: Sequence[Batch],
    tail: str | None = None,
    tail_params: Mapping[str, Any] | None = None,
    *,
    suffix: str = "",
) -> tuple[TextClause, dict[str, Any]]:
    """PostgreSQL: the batches' INSERTs and then ``tail`` (SQL text with ``:name``
    parameters, not starting with ``rb``) as one statement, with its parameters. Without
    a tail, ``suffix`` (``ON CONFLICT …``, ``RETURNING …``) ends the last INSERT. The
    same tables, columns, tail and suffix give the same statement object (``_SHAPES``)."""
    params: dict[str, Any] = dict(tail_params or {})
    tables: list[Table] = []
    cols: list[list[Any]] = []
    for i, (table, rows) in enumerate(b for b in batches if b[1]):
        named = _columns(table, rows)
        tables.append(table)
        cols.append([col for col, _ in named])
        for j, (_, values) in enumerate(named):
            params[f"rb{i}_{j}"] = values
    shape = (tuple(tables), tuple(tuple(c.key for c in tc) for tc in cols), tail, suffix)
    return _shaped(shape, cols, tail, suffix), params


def write(
    session: Session,
    batches: Sequence[Batch],
    tail: str | None = None,
    tail_params: Mapping[str, Any] | None = None,
) -> None:
    """Insert the batches' rows, then run ``tail``: one statement on PostgreSQL, an
    executemany per table (and ``tail`` after them) elsewhere."""
    batches = [b for b in batches if b[1]]
    if not batches and tail is None:
        return
    if session.get_bind().dialect.name == "postgresql":
        stmt, params = statement(batches, tail, tail_params)
        session.execute(stmt, params)
        return
    for table, rows in batches:
        cols = _columns(table, rows)  # every row the same keys, defaults filled in
        session.execute(insert(table), [{c.key: v[i] for c, v in cols} for i in range(len(rows))])
    if tail is not None:
        session.execute(text(tail), dict(tail_params or {}))

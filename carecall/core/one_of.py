"""``column IN (values)`` whose SQL text does not change with the number of values.

SQLAlchemy renders ``col.in_(values)`` as ``col IN ($1, $2, …, $n)``: a different
statement for every length of the list. On PostgreSQL the asyncpg driver keeps a cache of
prepared statements per connection, keyed by the SQL text, so a text it has not seen costs
an extra round trip (Parse/Describe) and a parse and analysis in the server before the
statement runs. Measured in the bench's quiet phase (issue 15): 1,532 of the dispatcher's
13,657 statements and 763 of the web server's 3,153 were such prepares, nearly all of them
IN lists of batches whose size varies from one loop turn to the next.

``one_of(col, values)`` renders ``col = ANY($1::type[])`` on PostgreSQL: one parameter,
one text, whatever the number of values (an empty list matches nothing, as ``IN ()``
does). Other backends (SQLite) get the ordinary expanding ``IN``. The choice is made when
the statement is compiled for a dialect, so one statement object serves both, and the
compiled form is cached like any other (the values are parameters of both forms).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Boolean, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ClauseElement, ColumnElement, any_, coercions, roles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

__all__ = ["one_of"]


class OneOf(ColumnElement[bool]):
    """``column`` is one of the values: ``= ANY(array)`` on PostgreSQL, ``IN`` elsewhere.

    It holds the column and the values as two bound parameters, one per form (an array
    for ``ANY``, an expanding list for ``IN``); each form's expression is built only when
    the statement is compiled, which a cached compiled form skips. Building both
    expressions for every statement (``col == any_(…)`` and ``col.in_(…)``, which coerces
    each value) cost 57 µs a call, 6 % of the web server's samples in the bench's quiet
    phase; the two parameters cost 4 µs."""

    __visit_name__ = "carecall_one_of"
    inherit_cache = True
    type = Boolean()
    # a comparison already (as IN and = ANY are): without this, a backend with no boolean
    # type (SQLite) gets ``(col IN (…)) = 1``, which no index serves
    _is_implicitly_boolean = True
    # the column and both parameters are part of the cache key, so the values of both are
    # extracted when a cached compiled form is reused; the form not rendered is ignored
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy declares it a plain class attribute)
        ("column", InternalTraversal.dp_clauseelement),
        ("as_array", InternalTraversal.dp_clauseelement),
        ("as_list", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: Any, values: list[Any]) -> None:
        self.column: ColumnElement[Any] = coercions.expect(roles.ExpressionElementRole, column)
        column_type = self.column.type
        self.as_array = bindparam(None, values, type_=ARRAY(column_type))
        self.as_list = bindparam(None, values, type_=column_type, expanding=True)


def one_of(column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN values`` with one SQL text for any number of values on PostgreSQL.
    ``values`` are Python values; a subquery goes in ``column.in_(select(...))``, whose
    text does not change anyway."""
    if isinstance(values, ClauseElement) or hasattr(values, "__clause_element__"):
        raise TypeError("one_of takes a collection of values, not a SQL expression: use column.in_()")
    return OneOf(column, list(values))


@compiles(OneOf, "postgresql")
def _as_any(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column == any_(element.as_array), **kw)


@compiles(OneOf)
def _as_in(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(element.as_list), **kw)

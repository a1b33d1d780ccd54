"""Problems in registry rows in plain words: pydantic's validation errors turned into one
``RowError`` each (file, row, column, value, reason), and the aligned table the
``carecall import`` command prints.

Pure: no I/O. Shared by the command line and the console's import endpoint, so a person
reads the same reason in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from carecall.core.tabular import text_table
from dispatcher.registry.files import RowError
from dispatcher.registry.reasons import REASONS, Param, english

# Never echoed back: a factory-provisioned device secret.
HIDDEN_COLUMNS = frozenset({"secret"})
VALUE_WIDTH = 24  # terminal columns of a value in the error table
_ID_COLUMNS = frozenset({"id", "station_id", "home_id", "parent_id"})

# pydantic's error type -> our reason code (dispatcher.registry.reasons)
_FIXED: dict[str, str] = {
    "missing": "required",
    "string_too_short": "required",
    "int_parsing": "not_whole_number",
    "int_from_float": "not_whole_number",
    "float_parsing": "not_number",
    "finite_number": "not_finite",
    "bool_parsing": "not_boolean",
    "bool_type": "not_boolean",
    "date_parsing": "not_date",
    "date_from_datetime_parsing": "not_date",
    "date_from_datetime_inexact": "date_with_time",
    "date_type": "not_date",
    "string_type": "not_text",
    "list_type": "not_list",
    "extra_forbidden": "unknown_field",
}
_BOUNDS = {
    "greater_than_equal": ("at_least", "ge"),
    "less_than_equal": ("at_most", "le"),
    "greater_than": ("more_than", "gt"),
    "less_than": ("less_than", "lt"),
}


def _pattern_code(column: str | None) -> str:
    if column in _ID_COLUMNS:
        return "id_format"
    if column == "phone":
        return "phone_pattern"
    return "bad_format"


def reason_code(err: ErrorDetails, column: str | None) -> tuple[str, dict[str, Param]] | None:
    """One pydantic error as a reason code and its parameters; None when only pydantic's
    own message can say it."""
    kind = err.get("type", "")
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if kind in _FIXED:
        return _FIXED[kind], {}
    if kind in REASONS:  # a validator's PydanticCustomError names our code itself
        return kind, {k: v for k, v in ctx.items() if isinstance(v, str | int | float)}
    if kind == "string_pattern_mismatch":
        return _pattern_code(column), {}
    if kind in ("string_too_long", "too_long"):
        return ("too_long" if kind == "string_too_long" else "too_many_items"), {
            "max": str(ctx.get("max_length"))
        }
    if kind in ("enum", "literal_error"):
        return "one_of", {"expected": str(ctx.get("expected"))}
    if kind in _BOUNDS:
        code, key = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # 90, not 90.0
        return code, {"bound": bound if isinstance(bound, int | float) else str(bound)}
    return None


def plain_reason(err: ErrorDetails, column: str | None) -> str:
    """One pydantic error as a sentence a county clerk understands."""
    coded = reason_code(err, column)
    if coded is not None:
        return english(*coded)
    message = str(err.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _shown_value(column: str | None, given: Any) -> str | None:
    if column in HIDDEN_COLUMNS or not isinstance(given, str | int | float) or isinstance(given, bool):
        return None
    return str(given)


def _where(loc: tuple[int | str, ...]) -> tuple[str, dict[str, Param]]:
    """A nested place after the column ("contact 2 phone") in words, and as parameters
    (``contact`` and ``field``, or ``at``) for the console to word it."""
    column = str(loc[0]) if loc else None
    path = "".join(f" {p + 1}" if isinstance(p, int) else f" {p}" for p in loc[1:]).strip()
    if not path:
        return "", {}
    if column == "contacts":
        if len(loc) > 1 and isinstance(loc[1], int):
            field = " ".join(str(p + 1) if isinstance(p, int) else str(p) for p in loc[2:])
            return "contact " + path, {"contact": loc[1] + 1, "field": field}
        path = "contact " + path
    return path, {"at": path}


def row_errors(file: str, number: int, exc: ValidationError) -> list[RowError]:
    """Every error of one row; nested places (a resident's second contact) lead the reason."""
    errors: list[RowError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        column = str(loc[0]) if loc else None
        last = str(loc[-1]) if loc else None
        path, place = _where(loc)
        reason = plain_reason(err, last)
        code, params = reason_code(err, last) or ("", {})
        errors.append(
            RowError(
                file,
                number,
                f"{path}: {reason}" if path else reason,
                column,
                _shown_value(column, err.get("input")),
                code,
                {**params, **place} if code else {},
            )
        )
    return errors


def error_table(errors: Sequence[RowError]) -> str:
    """The errors as an aligned table: file, row, column, value (cut), reason."""
    rows = [
        (e.file, e.row or "", e.column or "", "" if e.value is None else e.value, e.reason) for e in errors
    ]
    return text_table(
        ("file", "row", "column", "value", "reason"), rows, max_widths=(None, None, None, VALUE_WIDTH, None)
    )


def error_dicts(errors: Sequence[RowError]) -> list[dict[str, Any]]:
    """The errors as JSON objects (the console's import endpoint)."""
    return [
        {
            "file": e.file,
            "row": e.row,
            "column": e.column,
            "value": e.value,
            "reason": e.reason,
            "code": e.code or None,
            "params": e.params,
        }
        for e in errors
    ]

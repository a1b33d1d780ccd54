"""What is wrong with a registry file, as a code and its parameters, and the English
sentence for each code (what ``carecall import`` prints).

A ``RowError`` carries the code and parameters next to its English reason, so the
console can say the same thing in the reader's language (the ``importer.reason.<code>``
keys of its catalogues) while the command line keeps printing these sentences. A code
added here needs its two catalogue entries (tests/dispatcher/registry/test_reasons.py
checks that).

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from pydantic_core import PydanticCustomError

Param = str | int | float
Params = Mapping[str, Param]

# code -> English template; {name!r} quotes a text parameter as Python would.
REASONS: Final[dict[str, str]] = {
    # a cell
    "required": "required, but the cell is empty",
    "not_whole_number": "not a whole number",
    "not_number": "not a number",
    "not_finite": "not a finite number",
    "not_boolean": "expected true/false (or 是/否)",
    "not_date": "not a date; write it as YYYY-MM-DD",
    "date_with_time": "a date without a time; write it as YYYY-MM-DD",
    "not_text": "expected text",
    "not_list": "expected a list",
    "unknown_field": "not a column of this kind of file",
    "id_format": "an id is 1 to 64 letters, digits, _ or -",
    "phone_pattern": "a phone number is digits, an optional leading +, spaces, dashes or brackets",
    "phone_format": "a phone number is digits, an optional leading +, spaces or dashes",
    "phone_too_long": "a phone number has {max} characters at most",
    "bad_format": "not in the expected format",
    "too_long": "too long: {max} characters at most",
    "too_many_items": "too many items: {max} at most",
    "one_of": "expected one of {expected}",
    "at_least": "must be at least {bound}",
    "at_most": "must be at most {bound}",
    "more_than": "must be more than {bound}",
    "less_than": "must be less than {bound}",
    # a row against the others, and against what is stored
    "extra_cells": "more cells than the {columns} header columns",
    "duplicate_id": "duplicate id (also on row {row})",
    "unknown_ref": "unknown {noun} {ref!r} (import {kind} first)",
    "parent_later": "parent station {parent!r} comes later in this file (row {row}); list parent stations first",
    "parent_broken": "parent station {parent!r} is on row {row}, which has errors",
    "unknown_parent": "unknown parent station {parent!r}",
    "parent_tier": "parent station {parent!r} is a {parent_tier} station; a {tier} station's parent must be "
    "a {expected} station",
    "strands_child": "would make station {parent!r} a {parent_tier} station, but its child station {child!r} "
    "({child_tier}) needs a {expected} parent",
    # the header
    "first_column_id": "the first column must be 'id', found {found!r}",
    "unnamed_column": "column {position} has no name",
    "unknown_column": "unknown column {column!r} for {kind}; known columns: {known}",
    "repeated_columns": "repeated column(s): {columns}",
    # the file as a whole
    "unknown_kind": "unknown kind {kind!r}; use one of {kinds}",
    "kind_from_name": "cannot tell the kind from the file name; name it {kinds} (e.g. homes.csv) or pass the kind",
    "not_utf8": "not UTF-8 text (save it as 'CSV UTF-8'): {detail}",
    "malformed_csv": "malformed CSV: {detail}",
    "cannot_read": "cannot read: {detail}",
    "empty_file": "empty file: expected a header row",
    "not_xlsx": "not a readable .xlsx workbook: {detail}",
    "no_sheet": "the workbook has no sheet",
    "empty_sheet": "empty sheet: expected a header row",
    "unsupported_type": "unsupported file type {suffix!r}; use .csv or .xlsx",
    # a row's own rules (the schemas' validators)
    "shift_name": "shift name {name!r} must be a lowercase word (a-z, 0-9, _ or -), like day or night",
    "too_many_shifts": "too many shifts for one person (200 characters at most)",
    "unknown_channel": "unknown channel {channel!r}; channels are {channels}",
    "channel_twice": "channel {channel!r} is listed twice",
    "contact_field_separator": "contact field {value!r} must not contain {sep!r}",
    "condition_separator": "condition {value!r} must not contain {sep!r}",
    "tier_kind": "tier {tier!r} does not match kind {kind!r} (a {kind} is tier {expected!r})",
    "county_no_parent": "a county station has no parent; leave parent_id empty",
    "needs_parent": "a {tier} station needs parent_id (a {parent_tier} station)",
    "own_parent": "a station cannot be its own parent",
    "contact_form": "contact {number} {item!r} must be written name/relation/phone (or name/relation/phone/channels)",
    "contacts_share_priority": "two contacts share a priority",
    "birth_date": "birth date {date} is not plausible",
    "range_order": "{what}_min ({low}) must be below {what}_max ({high})",
    "short_secret": "secret must be at least {min} characters",
}


def refusal(code: str, **params: Param) -> PydanticCustomError:
    """A validator's refusal as one of these codes: pydantic reports the code as the
    error's type and the parameters as its context (``row_errors`` words it from them),
    and the English sentence as its message (what an API caller reads)."""
    return PydanticCustomError(code, english(code, params), dict(params))


def english(code: str, params: Params) -> str:
    """The English sentence of ``code`` with its parameters filled in."""
    try:
        return REASONS[code].format_map(params)
    except KeyError as exc:
        raise ValueError(f"registry reason {code!r}: missing parameter or unknown code ({exc})") from None

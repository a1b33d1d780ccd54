"""Parsing device payloads (docs/protocol.md "Bad input"): bytes in, a message or a
``Rejection`` out.

Everything here is pure, so the gateway can never be brought down by what a device sends
and the rules can be tested without a broker. The gateway shell does the I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from device_gateway.protocol.ack import Reason
from device_gateway.protocol.messages import EventMessage, StatusMessage, TelemetryMessage

MAX_PAYLOAD_BYTES = 16 * 1024
# Real payloads nest 3 levels (event → data → location); 16 leaves room for device
# makers and keeps pathological nesting away from recursive code.
MAX_JSON_DEPTH = 16
# No reading or id is a 65-digit integer; refusing them early also spares the parser the
# quadratic cost of converting (and Python's 4300-digit ValueError).
MAX_INT_DIGITS = 64


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str


class _BadNumber(ValueError):
    """A number JSON allows but no device reading can be; reported as bad_value."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise _BadNumber(f"integer with {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber(f"number {text[:40]} is out of range")
    return value


def _nesting(text: str) -> int:
    """Maximum bracket nesting outside strings, found without recursion."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _unstorable(obj: Any) -> Rejection | None:
    """Strings the database and the console cannot hold: NUL, and lone surrogates.

    JSON escapes (\\u0000, \\ud800) let both through valid UTF-8, and they would fail
    later at insert time, after the device had already been told nothing was wrong.
    """
    stack: list[Any] = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return Rejection(Reason.not_utf8, "string with a lone UTF-16 surrogate escape")
        if isinstance(node, str) and "\x00" in node:
            return Rejection(Reason.bad_value, "string contains NUL (\\u0000)")
    return None


def decode_json(payload: bytes, max_bytes: int) -> dict[str, Any] | Rejection:
    """Bytes → JSON object, refusing early whatever could hurt the parser or storage."""
    if len(payload) > max_bytes:
        return Rejection(Reason.too_large, f"{len(payload)} bytes > {max_bytes}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.not_utf8, f"invalid UTF-8 at byte {exc.start}")
    # Cheap pre-check so pathological nesting never reaches the recursive parser.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _nesting(text) > MAX_JSON_DEPTH:
        return Rejection(Reason.too_deep, f"nesting deeper than {MAX_JSON_DEPTH}")
    try:
        obj = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
            parse_float=_parse_float,
        )
    except _BadNumber as exc:
        return Rejection(Reason.bad_value, str(exc))
    except (ValueError, RecursionError) as exc:
        return Rejection(Reason.not_json, str(exc)[:200])
    if not isinstance(obj, dict):
        kind = "array" if isinstance(obj, list) else type(obj).__name__
        return Rejection(Reason.not_object, f"JSON {kind} where an object is required")
    return _unstorable(obj) or obj


def _field_path(obj: Any, loc: tuple[int | str, ...]) -> str:
    """Dotted path into the payload, skipping pydantic's union-member labels."""
    path: list[str] = []
    node = obj
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif i == len(loc) - 1 and isinstance(node, dict):
            pass  # a missing key
        else:
            continue
        path.append(str(part) or '""')
    return ".".join(path)


def _error_reason(err: Any) -> Reason:
    etype: str = err["type"]
    if etype == "missing":
        return Reason.missing_field
    if etype in ("literal_error", "enum"):
        # Right type, value outside the set; a number where a word belongs is a type error.
        return Reason.bad_value if isinstance(err.get("input"), str) else Reason.wrong_type
    if etype.endswith("_type"):
        return Reason.wrong_type
    return Reason.bad_value


_PRECEDENCE = (Reason.missing_field, Reason.bad_value, Reason.wrong_type)


def _validation_rejection(exc: ValidationError, obj: Any) -> Rejection:
    """One reason per message, the most telling: missing beats bad value beats wrong type.

    A union reports one error per member; if any member accepted the type, the value
    is what was wrong (ts = 10 is a bad value, ts = true a wrong type).
    """
    errors = exc.errors(include_url=False)
    reasons = [_error_reason(e) for e in errors]
    wanted = min(reasons, key=_PRECEDENCE.index)
    err = errors[reasons.index(wanted)]
    path = _field_path(obj, tuple(err["loc"]))
    if wanted is Reason.missing_field:
        return Rejection(wanted, f"missing required field {path!r}")
    msg: str = err.get("msg", "invalid")
    same_field = [e for e in errors if _field_path(obj, tuple(e["loc"])) == path]
    if wanted is Reason.wrong_type and len(same_field) > 1:
        # Naming only the first union member ("should be a valid boolean") misleads.
        msg = f"{_json_kind(err.get('input'))} is not an accepted type here"
    return Rejection(wanted, (f"{path}: {msg}" if path else msg)[:300])


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


_M = TypeVar("_M", bound=BaseModel)


def _parse(model: type[_M], payload: bytes, max_bytes: int) -> _M | Rejection:
    obj = decode_json(payload, max_bytes)
    if isinstance(obj, Rejection):
        return obj
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        return _validation_rejection(exc, obj)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # Defence in depth: a parser that raises would let one device stall the gateway.
        return Rejection(Reason.bad_value, str(exc)[:300])


def parse_event(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> EventMessage | Rejection:
    return _parse(EventMessage, payload, max_bytes)


def parse_telemetry(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> TelemetryMessage | Rejection:
    return _parse(TelemetryMessage, payload, max_bytes)


def parse_status(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> StatusMessage | Rejection:
    return _parse(StatusMessage, payload, max_bytes)


def excerpt(payload: bytes, limit: int) -> str:
    """A printable, truncated copy of a payload for inspection.

    Undecodable bytes become ``\\xNN`` one by one, so a cut through a multi-byte
    character or a single stray byte does not hide the readable rest. NUL is escaped
    because PostgreSQL text cannot hold it.
    """
    head = bytes(payload[: max(limit, 0)])
    text = head.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    return text + ("…" if len(payload) > limit else "")

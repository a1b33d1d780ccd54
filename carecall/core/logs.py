"""Structured logs: key=value on a terminal, JSON lines in production (``log_format``).

Logs never hold phone numbers (residents' relatives, staff): code that logs a target
masks it itself (``mask_phone``), and a processor masks anything phone-like in every
value of every line as a safety net, so a future ``log.info(..., body=...)`` cannot leak
one. Masked numbers keep the first three and last four digits (``138****5678``): enough
to tell two contacts apart when reading a log, not enough to ring anyone.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Mainland mobiles (optionally +86), landlines with an area code (0377-61234567) and any
# other international number written with a leading +. Digits glued to letters or other
# digits (ids, timestamps) are left alone.
_PHONE = re.compile(
    r"(?<![\w+])(?:(?:\+|00)?86[- ]?)?1[3-9]\d{9}(?!\d)"
    r"|(?<![\w+])0\d{2,3}[- ]\d{7,8}(?!\d)"
    r"|(?<![\w+])\+\d[\d ()-]{6,18}\d(?!\d)"
)


def _mask_match(m: re.Match[str]) -> str:
    digits = [i for i, ch in enumerate(m.group()) if ch.isdigit()]
    keep = set(digits[:3] + digits[-4:])
    return "".join(ch if (i in keep or not ch.isdigit()) else "*" for i, ch in enumerate(m.group()))


def mask_phone(text: str) -> str:
    """``text`` with every phone-number-like run masked: 13812345678 → 138****5678."""
    return _PHONE.sub(_mask_match, text)


def _masked(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_phone(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: _masked(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_masked(v, depth + 1) for v in value)
    return value


def mask_phones(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask phone numbers in every value (nested ones too)."""
    for key, value in event_dict.items():
        event_dict[key] = _masked(value)
    return event_dict


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time of writing, not when logging was set
    up (a test runner or a daemoniser may swap it, and the old one may be closed)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s", force=True)
    for noisy in ("amqtt", "transitions", "aiosqlite", "asyncio", "uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            mask_phones,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )

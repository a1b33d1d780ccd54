"""Value types shared by every configuration and data boundary (settings, registry rows,
scenarios): each check written once.

``config`` imports nothing of CareCall's, so any room may use these.
"""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator

__all__ = ["TimeZoneName", "check_timezone_name"]


def check_timezone_name(value: str) -> str:
    """``value`` when it names an IANA time zone this machine knows (``Asia/Shanghai``);
    ValueError otherwise."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


TimeZoneName = Annotated[str, AfterValidator(check_timezone_name)]
"""An IANA time zone name, checked with zoneinfo when a model is validated."""

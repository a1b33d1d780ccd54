"""Opening hours of a provider: parsing the text form and asking "open at this moment?".

The form is one or more rules separated by ``;``, each an optional day range and one or
more time ranges separated by ``,``::

    24h
    08:00-20:00
    mon-fri 08:00-12:00,14:00-18:00; sat 09:00-12:00
    22:00-06:00              (overnight: from 22:00 to 06:00 the next morning)

An overnight range belongs to the day it starts on: ``fri 22:00-06:00`` is open on
Saturday at 03:00. ``24:00`` may end a range (to midnight). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

__all__ = ["DAYS", "OpeningHours", "Range", "parse_hours"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01][0-9]|2[0-4]):([0-5][0-9])$")
MAX_TEXT = 300


@dataclass(frozen=True)
class Range:
    """Open on ``days`` (0 = Monday) from ``start`` to ``end`` minutes after midnight;
    ``end <= start`` runs past midnight into the next day."""

    days: frozenset[int]
    start: int
    end: int

    def open_at(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        yesterday = (weekday - 1) % 7
        return (weekday in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )


@dataclass(frozen=True)
class OpeningHours:
    ranges: tuple[Range, ...]

    def open_at(self, local: datetime) -> bool:
        """Whether open at ``local`` (a wall-clock time in the provider's zone)."""
        minute = local.hour * 60 + local.minute
        return any(r.open_at(local.weekday(), minute) for r in self.ranges)


ALWAYS = OpeningHours((Range(frozenset(range(7)), 0, 24 * 60),))


def _minutes(text: str) -> int:
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad time {text.strip()!r}: expected HH:MM")
    value = int(m.group(1)) * 60 + int(m.group(2))
    if value > 24 * 60:
        raise ValueError(f"bad time {text.strip()!r}: after 24:00")
    return value


def _days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"bad days {text!r}: use mon … sun, e.g. mon-fri or sat,sun")
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _rule(text: str) -> list[Range]:
    words = text.split()
    if not words:
        raise ValueError("empty rule between ';'")
    days = frozenset(range(7))
    if words[0][0].isalpha():
        days = _days(words[0])
        words = words[1:]
    if len(words) != 1:
        raise ValueError(f"bad rule {text.strip()!r}: expected [days] HH:MM-HH:MM[,HH:MM-HH:MM]")
    out = []
    for span in words[0].split(","):
        start_text, sep, end_text = span.partition("-")
        if not sep:
            raise ValueError(f"bad range {span!r}: expected HH:MM-HH:MM")
        start, end = _minutes(start_text), _minutes(end_text)
        if start == 24 * 60:
            raise ValueError(f"bad range {span!r}: cannot start at 24:00")
        if start == end:
            raise ValueError(f"bad range {span!r}: empty (use 00:00-24:00 for all day)")
        out.append(Range(days, start, end % (24 * 60) if end == 24 * 60 and start == 0 else end))
    return out


def parse_hours(text: str) -> OpeningHours:
    """The hours ``text`` describes, or ValueError saying what is wrong."""
    text = text.strip().lower()
    if len(text) > MAX_TEXT:
        raise ValueError(f"opening hours longer than {MAX_TEXT} characters")
    if text in ("24h", "24/7"):
        return ALWAYS
    if not text:
        raise ValueError("opening hours are empty (use '24h' for always open)")
    ranges: list[Range] = []
    for rule in text.split(";"):
        ranges.extend(_rule(rule))
    return OpeningHours(tuple(ranges))

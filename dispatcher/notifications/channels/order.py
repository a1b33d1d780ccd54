"""Whose channel order wins: a person's own (staff.channels, contacts.channels) over the
purpose's route in config/notifications.yaml.

A person's order is a space-separated list such as ``"app sms voice"``. Each word is a
channel kind (``app``, ``sms``, ``voice``, ``robot``, ``email``) or the name of one
configured channel (``tencent_sms``). A kind stands for the channels of that kind in the
purpose's route, in route order; when the route has none of that kind, for the configured
channels of that kind (config order). Words that name nothing configured are skipped; when nothing the person listed is
available, the purpose's order is used, because an emergency that reaches nobody is worse
than one sent on a channel the person did not pick. The failover goes to the person's
next channel, since ``deliver`` tries the resolved list in order.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

KINDS = ("app", "sms", "voice", "robot", "email")
_WORD = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def parse_order(raw: str | Sequence[str] | None) -> tuple[str, ...]:
    """The words of a stored order (space- or comma-separated), lower-cased, without
    duplicates or malformed words. ``None`` and ``""`` give ``()``: no own order."""
    if raw is None:
        return ()
    words = re.split(r"[\s,]+", raw) if isinstance(raw, str) else [str(w) for w in raw]
    out: list[str] = []
    for word in (w.strip().lower() for w in words):
        if word and _WORD.match(word) and word not in out:
            out.append(word)
    return tuple(out)


def resolve_order(
    route: Sequence[str],
    available: Mapping[str, str],
    person: str | Sequence[str] | None = None,
) -> list[str]:
    """The channel names to try, in order.

    ``route`` is the purpose's order (channel names); ``available`` maps each channel that
    can be used (configured ones and ``app`` when the caller has it) to its kind; ``person``
    is the person's own order (see the module's doc). Channels not in ``available`` never
    appear.
    """
    base = [n for n in route if n in available]
    words = parse_order(person)
    if not words:
        return base
    others = [n for n in available if n not in base]
    out: list[str] = []
    for word in words:
        if word in available:
            picked = [word]
        elif word in KINDS:
            picked = [n for n in base if available[n] == word] or [n for n in others if available[n] == word]
        else:
            picked = []
        out += [n for n in picked if n not in out]
    return out or base


def app_only(person: str | Sequence[str] | None) -> bool:
    """The person wants the responder app and nothing else (``"app"``): no SMS, voice …
    is queued for their pages."""
    words = parse_order(person)
    return bool(words) and set(words) == {"app"}

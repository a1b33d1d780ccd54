"""Which service orders a visit's form opens. Pure: the form names the kinds of service
the visitor found the resident needs; each known kind of the catalogue opens one order
(one per visit and kind: ``orders`` holds a unique (visit_id, kind))."""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["MAX_KINDS", "UnknownKinds", "requested_kinds"]

MAX_KINDS = 16


class UnknownKinds(ValueError):
    """Kinds the catalogue does not have; the message names them and the known ones."""


def requested_kinds(kinds: Iterable[str], legacy: str | None, known: Collection[str]) -> tuple[str, ...]:
    """The kinds to open orders for, each once, in the order the visitor chose them
    (``legacy``, the form's single ``requested_service_kind``, first). Unknown kinds are
    refused as a whole: a typo must not silently drop a need."""
    wanted = [*([legacy] if legacy else []), *kinds]
    out = tuple(dict.fromkeys(wanted))
    unknown = [k for k in out if k not in known]
    if unknown:
        raise UnknownKinds(
            f"unknown service kinds {', '.join(sorted(unknown))}; one of {', '.join(sorted(known))}"
        )
    if len(out) > MAX_KINDS:
        raise UnknownKinds(f"at most {MAX_KINDS} service kinds per visit")
    return out

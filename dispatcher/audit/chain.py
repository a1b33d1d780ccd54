"""The audit log's hash chain: what makes the record something nobody can quietly rewrite.

Each row's hash covers the previous row's hash and the row's own canonical content, so
changing any row, deleting one, or putting them in another order breaks the chain at
that point, and :func:`verify` names the first seq where it breaks. Everything before
that seq is proven as written.

What a chain alone cannot prove is that nothing was cut off the end, or that someone
did not rewrite the whole chain from some row on; for that the verifier compares with
an anchor held elsewhere (the ``audit_head`` row, or a hash a supervisor exported
earlier), passed as ``head``.

The canonical form is fixed and versionless on purpose: the bytes hashed today must be
the bytes hashed when an auditor verifies years later, whatever library versions run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypedDict, Unpack

__all__ = [
    "GENESIS",
    "PROBLEMS",
    "AuditKind",
    "ChainRow",
    "ChainVerdict",
    "RowContent",
    "canonical",
    "link",
    "next_row",
    "row_hash",
    "verify",
]

GENESIS = "0" * 64


class AuditKind(StrEnum):
    """Every fact the record can hold about a call (or, with no call, about the system)."""

    event_received = "event_received"
    call_opened = "call_opened"
    event_joined = "event_joined"
    priority_set = "priority_set"
    assigned = "assigned"
    alerted = "alerted"
    reminder = "reminder"
    escalated = "escalated"
    acknowledged = "acknowledged"
    responder_dispatched = "responder_dispatched"
    en_route = "en_route"
    on_scene = "on_scene"
    resolved = "resolved"
    cancelled = "cancelled"
    cancel_requested = "cancel_requested"
    note = "note"
    notification_sent = "notification_sent"
    notification_failed = "notification_failed"
    timer_stale = "timer_stale"
    watchdog_repair = "watchdog_repair"
    restored = "restored"
    # Passed on to a public service: 120 ambulance, 110 police, 119 fire (detail says which).
    handoff = "handoff"
    # The operator rang the resident back: which line (home / mobile), and the outcome.
    called_back = "called_back"
    # The stall alarm (dispatcher/health/monitor.py): a part of the dispatch pipeline stalled / recovered.
    dispatch_stalled = "dispatch_stalled"
    dispatch_recovered = "dispatch_recovered"
    # A notification channel's cost cap (config/notifications.yaml) stopped a paid send:
    # recorded once per call (per-call cap) or per hour (hourly cap).
    cost_guard_hit = "cost_guard_hit"
    # One paid send (SMS, voice) reserved in the shared cost budget, committed before the
    # send so every dispatcher copy counts it (dispatcher/notifications/cost_ledger.py).
    cost_reserved = "cost_reserved"
    # Welfare visits (dispatcher/visits): no call; detail names the visit and resident.
    visit_checked_in = "visit_checked_in"
    visit_done = "visit_done"
    visit_cancelled = "visit_cancelled"
    # A missed visit told the station manager (level 1), then the street centre (level 2).
    visit_escalated = "visit_escalated"
    # Service orders (dispatcher/orders/): call_id is empty, detail["order_id"] names the
    # order; one row per step of dispatcher.orders.lifecycle, plus a missed service level.
    order_created = "order_created"
    order_assign = "order_assign"
    order_accept = "order_accept"
    order_start = "order_start"
    order_done = "order_done"
    order_confirm = "order_confirm"
    order_close = "order_close"
    order_cancel = "order_cancel"
    order_breached = "order_breached"


PROBLEMS: dict[str, str] = {
    "edited": "edited (content does not match its hash)",
    "gap": "deleted or reordered (seq gap)",
    "back": "deleted or reordered (seq goes backwards or repeats)",
    "prev": "deleted or reordered (prev_hash mismatch)",
    "tail": "truncated or rewritten (last row does not match the head)",
    "empty": "no rows, but the head says there should be",
}


def _utc_iso(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        # A naive time is ambiguous; hashing it would bake the ambiguity into the record.
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class RowContent(TypedDict):
    """What a row's hash covers besides the previous hash (the chain's own columns)."""

    seq: int
    call_id: int | None
    at: datetime
    kind: str
    actor: str
    station_id: str | None
    detail: Mapping[str, Any]


def canonical(**row: Unpack[RowContent]) -> bytes:
    """The exact bytes a row's hash covers: sorted keys, no spaces, UTC times with
    microseconds, UTF-8 without escapes, NaN refused (JSON cannot store it back)."""
    body = {
        "seq": row["seq"],
        "call_id": row["call_id"],
        "at": _utc_iso(row["at"]),
        "kind": str(row["kind"]),
        "actor": row["actor"],
        "station_id": row["station_id"],
        "detail": dict(row["detail"]),
    }
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def link(prev_hash: str, content: bytes) -> str:
    """SHA-256 over the previous row's hash and a row's canonical content."""
    return hashlib.sha256(prev_hash.encode("ascii") + content).hexdigest()


def row_hash(prev_hash: str, **row: Unpack[RowContent]) -> str:
    """The hash a row must carry: the one place a link of the chain is computed.

    Every writer (:func:`next_row`, ``dispatcher.audit.service``) and the verifier
    (:func:`verify`) call this, so what is written and what is checked cannot drift."""
    return link(prev_hash, canonical(**row))


@dataclass(frozen=True, slots=True)
class ChainRow:
    seq: int
    call_id: int | None
    at: datetime
    kind: str
    actor: str
    station_id: str | None
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str

    def content(self) -> RowContent:
        return RowContent(
            seq=self.seq,
            call_id=self.call_id,
            at=self.at,
            kind=self.kind,
            actor=self.actor,
            station_id=self.station_id,
            detail=self.detail,
        )


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """``first_bad_seq``: the first seq at which the chain is not sound; every row
    before it verified. ``rows_checked`` counts the rows read, the bad one included."""

    ok: bool
    rows_checked: int
    first_bad_seq: int | None
    problem: str | None


def next_row(
    prev_seq: int,
    prev_hash: str,
    *,
    call_id: int | None,
    at: datetime,
    kind: str,
    actor: str,
    station_id: str | None,
    detail: Mapping[str, Any],
) -> ChainRow:
    """The row that follows the head (``prev_seq``, ``prev_hash``); (0, GENESIS) for the first."""
    seq = prev_seq + 1
    digest = row_hash(
        prev_hash,
        seq=seq,
        call_id=call_id,
        at=at,
        kind=kind,
        actor=actor,
        station_id=station_id,
        detail=detail,
    )
    return ChainRow(seq, call_id, at, kind, actor, station_id, detail, prev_hash, digest)


def verify(
    rows: Iterable[ChainRow],
    *,
    start: tuple[int, str] = (0, GENESIS),
    head: tuple[int, str] | None = None,
) -> ChainVerdict:
    """Check rows given in seq order; stop at the first break.

    ``start`` is the (seq, hash) the first row follows: (0, GENESIS) for the whole log,
    or a previously verified point to check only what came after. ``head``, when given,
    is the anchor kept outside the rows (``audit_head``); without it, rows cut from the
    end cannot be seen.
    """
    expected_seq = start[0] + 1
    prev_hash = start[1]
    checked = 0
    for row in rows:
        checked += 1
        if row.seq != expected_seq:
            key = "gap" if row.seq > expected_seq else "back"
            return ChainVerdict(False, checked, expected_seq, PROBLEMS[key])
        if row.prev_hash != prev_hash:
            return ChainVerdict(False, checked, row.seq, PROBLEMS["prev"])
        try:
            sound = row_hash(row.prev_hash, **row.content()) == row.hash
        except (ValueError, TypeError, UnicodeEncodeError):
            sound = False  # unhashable content (naive time, non-JSON detail) was not written by us
        if not sound:
            return ChainVerdict(False, checked, row.seq, PROBLEMS["edited"])
        prev_hash = row.hash
        expected_seq += 1
    if head is not None:
        head_seq, head_hash = head
        if checked == 0 and head_seq > start[0]:
            return ChainVerdict(False, 0, start[0] + 1, PROBLEMS["empty"])
        if head_seq != expected_seq - 1 or head_hash != prev_hash:
            # The first seq that should exist and does not, or the last one that differs.
            bad = min(expected_seq, head_seq) if head_seq >= expected_seq - 1 else head_seq + 1
            return ChainVerdict(False, checked, bad, PROBLEMS["tail"])
    return ChainVerdict(True, checked, None, None)

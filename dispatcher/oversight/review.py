"""The review list: calls a supervisor must look at one by one, each with its timeline.

A call is listed for every reason that holds (an emergency or urgent call answered after
the review limit or left unanswered past it; device trouble acknowledged later than its
own working-hours target, escalated to the county, responder arrived over the service-circle
limit or never arrived after it, closed as no access), so the list is also a tally of
what went wrong and nothing is hidden behind a first match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dispatcher.oversight.figures import CallFigures

__all__ = ["REVIEW_REASONS", "ReviewItem", "TimelineEntry", "review_list", "review_rows"]

REVIEW_REASONS: dict[str, str] = {
    "answered_late": "Answered after the review limit, or left unanswered past it.",
    "escalated_to_county": "Escalated to the county centre.",
    "arrival_over_limit": "Responder on scene after the service-circle limit, or not there by it.",
    "no_access": "Closed as no access: nobody could get in.",
    "trouble_late": "Device trouble not acknowledged within its working-hours target.",
}


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    seq: int
    at: datetime
    kind: str
    actor: str
    station_id: str | None
    detail: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "actor": self.actor,
            "station_id": self.station_id,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True, slots=True)
class ReviewItem:
    figures: CallFigures
    reasons: tuple[str, ...]


def _reasons(f: CallFigures) -> tuple[str, ...]:
    out: list[str] = []
    if f.answer_review is False:
        out.append("answered_late")
    if f.marks.escalated_to_county:
        out.append("escalated_to_county")
    if f.arrival_met is False:
        out.append("arrival_over_limit")
    if f.info.outcome == "no_access":
        out.append("no_access")
    if f.trouble_met is False:
        out.append("trouble_late")
    return tuple(out)


def review_list(figs: Sequence[CallFigures]) -> list[ReviewItem]:
    """Calls with at least one review reason, oldest first."""
    items = [ReviewItem(f, r) for f in figs if (r := _reasons(f))]
    # By the start instant (integer microseconds): the order of the local times, without
    # a time-zone lookup for every comparison.
    return sorted(items, key=lambda i: (i.figures.marks.start_us or 0, i.figures.info.call_id))


def review_rows(items: Sequence[ReviewItem]) -> list[dict[str, Any]]:
    """Flat rows of the review list for tables and exports (timelines go separately)."""
    rows: list[dict[str, Any]] = []
    for item in items:
        f, i = item.figures, item.figures.info
        rows.append(
            {
                "call_id": i.call_id,
                "reasons": " ".join(item.reasons),
                "started_local": f.start_local.isoformat(),
                "station_id": i.station_id,
                "station_name": i.station_name,
                "street_id": i.street_id,
                "home_id": i.home_id,
                "type": i.event_type,
                "class": i.event_class,
                "priority": i.priority,
                "area": i.area,
                "status": i.status,
                "outcome": i.outcome,
                "answer_s": f.answer_s,
                "dispatch_s": f.dispatch_s,
                "arrival_s": f.arrival_s,
                "arrival_limit_s": f.arrival_limit_s,
                "close_s": f.close_s,
                "escalations": f.marks.escalations,
            }
        )
    return rows

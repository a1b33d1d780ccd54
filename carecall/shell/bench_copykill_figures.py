"""Pure figures of ``carecall bench``'s copy-kill phase (issue 15): how long alarms waited
before and after one copy was SIGKILLed, and whether the escalation timers of calls the
dead copy opened still fired. No I/O here; carecall/shell/bench_copykill.py measures.

Times are plain floats: monotonic seconds for waits (the load generator's clock), and
epoch seconds for timers (the database's due/fired times).

Windows around the kill, for the waits (one alarm = sent at ``sent``, answered at ``done``
or never):

- **before**: sent and answered before the kill — the same run's baseline;
- **after**: everything else: in flight when the copy died (sent before, answered after or
  never) or sent after the kill. Any wait the kill lengthened is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simulators.runner import percentile

GOAL_LONGEST_WAIT_MS = 5_000.0
"""Issue 15: the longest alarm wait after SIGKILL of 1 of 2 copies is at most 5 s."""


@dataclass(frozen=True)
class Wait:
    """One alarm: first sent, and answered (``None``: never, within the bench's wait)."""

    sent: float
    done: float | None


@dataclass(frozen=True)
class TimerRow:
    """One escalation timer of the phase's calls (epoch seconds; ``fired`` None: not fired)."""

    due: float
    fired: float | None
    opened_by: str  # the dispatcher copy that opened its call


def summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """count/p50/p99/max, nearest rank (always an observed value), rounded to 0.01 ms."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 0.50), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "max": round(ordered[-1], 2),
    }


def split_at_kill(waits: Sequence[Wait], kill_at: float) -> tuple[list[Wait], list[Wait]]:
    """(before, after): before = sent and answered before ``kill_at``; after = the rest."""
    before = [w for w in waits if w.done is not None and w.sent < kill_at and w.done < kill_at]
    after = [w for w in waits if not (w.done is not None and w.sent < kill_at and w.done < kill_at)]
    return before, after


def _ms(waits: Sequence[Wait]) -> list[float]:
    return [(w.done - w.sent) * 1000.0 for w in waits if w.done is not None]


def ratio(value: float | int | None, reference: float | int | None) -> float | None:
    """value / reference, None when either is missing or the reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return round(value / reference, 2)


def kill_figures(waits: Sequence[Wait], kill_at: float) -> dict[str, Any]:
    """Sent, answered, lost (never answered), the before/after summaries with their ratios
    after/before, how many were in flight when the copy died, and the longest wait."""
    before, after = split_at_kill(waits, kill_at)
    b, a = summary(_ms(before)), summary(_ms(after))
    all_ms = _ms(waits)
    in_flight = sum(1 for w in waits if w.sent < kill_at and (w.done is None or w.done >= kill_at))
    return {
        "sent": len(waits),
        "answered": len(all_ms),
        "lost": len(waits) - len(all_ms),
        "in_flight_at_kill": in_flight,
        "sent_after_kill": sum(1 for w in waits if w.sent >= kill_at),
        "before_ms": b,
        "after_ms": a,
        "ratio_p50": ratio(a["p50"], b["p50"]),
        "ratio_p99": ratio(a["p99"], b["p99"]),
        "ratio_max": ratio(a["max"], b["max"]),
        "longest_ms": round(max(all_ms), 2) if all_ms else None,
    }


def wait_verdict(fig: dict[str, Any], victim_handled: int, goal_ms: float = GOAL_LONGEST_WAIT_MS) -> str:
    """``met`` when nothing was lost and the longest wait is within the goal; "not measured"
    when the kill proved nothing: the killed copy had handled none of the leg's alarms
    before it died, or no alarm was sent after it."""
    longest = fig.get("longest_ms")
    if victim_handled <= 0 or not fig.get("sent_after_kill"):
        return "not measured"
    if fig.get("lost") or not isinstance(longest, int | float) or longest > goal_ms:
        return "not met"
    return "met"


def timer_figures(
    rows: Sequence[TimerRow], *, killed: str, kill_at: float, window_s: float
) -> dict[str, Any]:
    """The timers of calls the killed copy opened that were due while it was dead: due in
    [kill, kill + window], or due before but not yet fired when it died. How many, how many
    fired (``missed``: not fired), fired − due; and, as the baseline, every timer of the
    phase's calls (whoever opened them) due and fired before the kill."""
    end = kill_at + window_s
    orphans = [
        r
        for r in rows
        if r.opened_by == killed
        and r.due <= end
        and (r.due >= kill_at or r.fired is None or r.fired >= kill_at)
    ]
    base = [r for r in rows if r.fired is not None and r.due < kill_at and r.fired < kill_at]
    late = [(r.fired - r.due) * 1000.0 for r in orphans if r.fired is not None]
    base_late = [(r.fired - r.due) * 1000.0 for r in base if r.fired is not None]
    o, b = summary(late), summary(base_late)
    return {
        "due_after_kill": len(orphans),
        "fired": len(late),
        "missed": len(orphans) - len(late),
        "late_ms": o,
        "before_fired": len(base_late),
        "before_late_ms": b,
        "ratio_p50": ratio(o["p50"], b["p50"]),
        "ratio_p99": ratio(o["p99"], b["p99"]),
        "window_s": window_s,
    }


def timer_verdict(fig: dict[str, Any], goal_ms: float = GOAL_LONGEST_WAIT_MS) -> str:
    """``met`` when at least one orphaned timer came due, every one fired, and none more
    than ``goal_ms`` late; "not measured" when none came due in the window."""
    if not fig.get("due_after_kill"):
        return "not measured"
    late = fig.get("late_ms")
    worst = late.get("max") if isinstance(late, dict) else None
    if fig.get("missed") or not isinstance(worst, int | float) or worst > goal_ms:
        return "not met"
    return "met"

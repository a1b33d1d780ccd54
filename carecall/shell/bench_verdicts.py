"""Pure: the targets ``carecall bench`` judges, and how (carecall/shell/bench.py prints them).

Issue 15's table ("on this machine", ratios to the same-run baseline beside them):

| figure | quiet | contended |
| --- | --- | --- |
| alarm ``received`` ack p99 at 100 events/s + 5,000 readings/s | ≤ 20 ms | ≤ 100 ms |
| event → call on a console p99 (a real SSE client) | ≤ 100 ms | ≤ 250 ms |
| escalation timer fired − due p99 | ≤ 100 ms | ≤ 500 ms |
| storm of 5,000 in 10 s: ack p99, none lost | ≤ 500 ms | ≤ 2 s |
| another device's SOS ack p99 during a 1,000/s junk flood | ≤ 20 ms | — |
| longest alarm wait after SIGKILL of 1 of 2 gateway copies | ≤ 5 s | — |
| embedded full run: storm stored + acked, none lost | all, p99 ≤ 5 s | — |

The issue measured its table with ``--target real``, and gives the embedded target a row
of its own (a storm p99 of 5 s, ten times the real target's 500 ms), so the first six rows
are judged on the real target and the last on the embedded one; the other target's rows
are printed with their figures, "not judged". "Same for dispatchers and timers" makes the
copy-kill phase's dispatcher and timer figures targets too (the same 5 s). Of issue 6's
targets only the ingest ratio (≥ 0.5× the broker) still means something: issue 15's rows
replace its alarm, storm, console and timer goals with stricter ones.

Rules, in order: a goal of a phase that did not run is left out; one set for the other
target, or any goal in a ``--quick`` run (shorter phases, a crash and correctness check),
is "not judged"; so is a copy-kill leg the phase itself could not measure (the killed copy
had handled nothing). A figure that could not be measured is missed, and so is a latency
with anything lost beside it (an alarm not stored, acked or routed, a call the console
never showed, a due timer not fired): a p99 over the alarms that made it says nothing of
those that did not. Over the goal is missed. A latency within its goal measured with fewer
readings behind than the issue's 5,000/s (the embedded broker is capped at 80 % of its
sustained ingest) is "not judged": a pass at a lighter load proves nothing, a miss does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

MET, MISSED, NOT_JUDGED = "met", "missed", "not judged"
READINGS_BEHIND = 5_000.0  # the issue's readings/s behind the alarm path
BOTH = ("embedded", "real")


@dataclass(frozen=True)
class Goal:
    id: str  # unique: two goals may judge one figure (the storm p99, per target)
    key: str  # the figure judged
    label: str
    phase: str  # quiet, contended, flood, copy-kill, or ingest (the ramp)
    goal: float
    op: str = "<="
    unit: str = "ms"  # ms: the ratio to the baseline's p99 at 1k msg/s is printed
    zero: tuple[str, ...] = ()  # counts that must be 0 beside it (lost, not acked …)
    targets: tuple[str, ...] = ("real",)
    behind: str | None = None  # readings/s behind the figure: met needs READINGS_BEHIND
    measured: str | None = None  # a figure false when the phase could not measure it
    issue: int = 15


GOALS: tuple[Goal, ...] = (
    Goal(
        "ingest_ratio",
        "ingest_ratio",
        "ingest: telemetry sustained ÷ baseline",
        "ingest",
        0.5,
        op=">=",
        unit="×",
        targets=BOTH,
        issue=6,
    ),
    Goal(
        "alarm_ack",
        "alarm_ack_p99_ms",
        "alarm 'received' ack p99 @100 events/s + 5,000 readings/s",
        "quiet",
        20.0,
        zero=("alarm_unacked",),
        behind="alarm_telemetry_behind_msg_s",
    ),
    Goal(
        "console",
        "console_p99_ms",
        "event→call on a console p99 (SSE client)",
        "quiet",
        100.0,
        zero=("console_missing",),
    ),
    Goal("timers", "timer_late_p99_ms", "escalation timer fired−due p99", "quiet", 100.0),
    Goal(
        "storm",
        "storm_ack_p99_ms",
        "storm 5,000 in 10 s: ack p99, none lost",
        "quiet",
        500.0,
        zero=("storm_lost",),
    ),
    Goal(
        "embedded_storm",
        "storm_ack_p99_ms",
        "embedded full run: storm stored + acked, none lost, p99",
        "quiet",
        5_000.0,
        zero=("storm_lost",),
        targets=("embedded",),
    ),
    Goal(
        "contended_alarm_ack",
        "contended_alarm_ack_p99_ms",
        "contended: alarm 'received' ack p99",
        "contended",
        100.0,
        zero=("contended_alarm_unacked",),
        behind="contended_alarm_telemetry_behind_msg_s",
    ),
    Goal(
        "contended_console",
        "contended_console_p99_ms",
        "contended: event→call on a console p99 (SSE)",
        "contended",
        250.0,
        zero=("contended_console_missing",),
    ),
    Goal(
        "contended_timers",
        "contended_timer_late_p99_ms",
        "contended: escalation timer fired−due p99",
        "contended",
        500.0,
        zero=("contended_timers_unfired",),
    ),
    Goal(
        "contended_storm",
        "contended_storm_ack_p99_ms",
        "contended: storm ack p99, none lost",
        "contended",
        2_000.0,
        zero=("contended_storm_lost",),
    ),
    Goal(
        "flood",
        "flood_ack_p99_ms",
        "another device's SOS ack p99 during 1,000/s junk",
        "flood",
        20.0,
        zero=("flood_unacked", "flood_own_sos_unacked"),
    ),
    Goal(
        "copykill_gateway",
        "copykill_gateway_longest_ms",
        "longest alarm wait after SIGKILL of 1 of 2 gateway copies",
        "copy-kill",
        5_000.0,
        zero=("copykill_gateway_lost",),
        measured="copykill_gateway_measured",
    ),
    Goal(
        "copykill_dispatcher",
        "copykill_dispatcher_longest_ms",
        "longest alarm wait after SIGKILL of 1 of 2 dispatcher copies",
        "copy-kill",
        5_000.0,
        zero=("copykill_dispatcher_lost",),
        measured="copykill_dispatcher_measured",
    ),
    Goal(
        "copykill_timers",
        "copykill_timers_late_max_ms",
        "the dead dispatcher's timers: worst fired−due",
        "copy-kill",
        5_000.0,
        zero=("copykill_timers_missed",),
        measured="copykill_timers_measured",
    ),
)


@dataclass(frozen=True)
class Verdict:
    id: str
    issue: int
    phase: str
    label: str
    key: str
    value: Any
    op: str
    goal: float
    unit: str
    ratio: float | None  # value ÷ the baseline's p99 at 1k msg/s (ms figures)
    status: str  # met, missed, not judged
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:g}"


def _status(g: Goal, figures: Mapping[str, Any], *, target: str, quick: bool) -> tuple[str, str]:
    if target not in g.targets:
        return NOT_JUDGED, f"the issue sets it for the {' and '.join(g.targets)} target"
    if quick:
        return NOT_JUDGED, "quick run"
    if g.measured is not None and not figures.get(g.measured):
        return NOT_JUDGED, "the phase could not measure it (the killed copy had handled nothing)"
    value = figures.get(g.key)
    if not _num(value):
        return MISSED, "no figure"
    bad = []
    for z in g.zero:
        n = figures.get(z)
        if not _num(n):
            bad.append(f"{z} ?")
        elif n != 0:
            bad.append(f"{z} {_fmt(n)}")
    if bad:
        return MISSED, ", ".join(bad)
    if g.op == "<=" and value > g.goal:
        return MISSED, f"over {_fmt(g.goal)} {g.unit}"
    if g.op == ">=" and value < g.goal:
        return MISSED, f"under {_fmt(g.goal)}{g.unit}"
    if g.behind is not None:
        behind = figures.get(g.behind)
        if not _num(behind) or behind < READINGS_BEHIND:
            shown = _fmt(behind) if _num(behind) else "?"
            return NOT_JUDGED, f"within it, but with {shown} readings/s behind, not {READINGS_BEHIND:,.0f}"
    return MET, ""


def judge(
    figures: Mapping[str, Any],
    *,
    target: str,
    ran: Iterable[str],
    quick: bool,
    baseline_p99_ms: float | None,
    goals: Sequence[Goal] = GOALS,
) -> list[Verdict]:
    """Every goal of a phase in ``ran`` (the phases that ran, plus "ingest" when the ramp
    did), judged on ``target`` ("embedded" or "real")."""
    phases = set(ran)
    out: list[Verdict] = []
    for g in goals:
        if g.phase not in phases:
            continue
        value = figures.get(g.key)
        ratio = None
        if (
            g.unit == "ms"
            and _num(value)
            and isinstance(baseline_p99_ms, int | float)
            and baseline_p99_ms > 0
        ):
            ratio = round(value / baseline_p99_ms, 1)
        status, reason = _status(g, figures, target=target, quick=quick)
        out.append(
            Verdict(
                g.id, g.issue, g.phase, g.label, g.key, value, g.op, g.goal, g.unit, ratio, status, reason
            )
        )
    return out


def missed_ids(verdicts: Iterable[Verdict]) -> list[str]:
    return [v.id for v in verdicts if v.status == MISSED]


def window_timers(
    rows: Iterable[tuple[float, float | None]], start: float, end: float
) -> tuple[list[float], int, int]:
    """Timers (due, fired; epoch seconds, fired None: not yet) that came due in
    [start, end]: (fired − due in ms of those fired, how many came due, how many not fired)."""
    due = [(d, f) for d, f in rows if start <= d <= end]
    late = [(f - d) * 1000.0 for d, f in due if f is not None]
    return late, len(due), len(due) - len(late)

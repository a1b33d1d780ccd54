"""Pure decisions of ``carecall bench``'s lane phases (issue 15): which phases a
``--phases`` text selects, and the contended and flood figures set beside the quiet ones
with their ratios. No I/O here; carecall/shell/bench.py runs the phases and prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PHASES = ("quiet", "contended", "flood", "copy-kill")
"""quiet: alarm path, storm, timers as before; contended: the alarm path and storm again
while a helper process keeps one core busy, and the timers of its calls due meanwhile;
flood: one device sends junk while others send alarms; copy-kill (real target only): one
of two gateway copies, then one of two dispatcher copies, SIGKILLed mid-stream. The
baseline always runs; the ingest ramp runs unless copy-kill is the only phase (copy-kill
compares with its own pre-kill window)."""

DEFAULT_PHASES = ("quiet", "contended", "flood")
"""What ``--phases`` selects when not given: copy-kill needs the real target."""

REAL_ONLY = ("copy-kill",)


def runs_ingest(phases: tuple[str, ...]) -> bool:
    """The ingest ramp runs unless copy-kill is the only phase."""
    return tuple(phases) != ("copy-kill",)


def phases_for_target(target: str, phases: tuple[str, ...]) -> tuple[str, ...]:
    """The selected phases that run on ``target`` ("embedded" or "real"): the embedded
    target (one process) has no copy to kill, so it leaves the real-only phases out."""
    if target == "embedded":
        return tuple(p for p in phases if p not in REAL_ONLY)
    return tuple(phases)


def check_phases_for_targets(targets: tuple[str, ...], phases: tuple[str, ...]) -> None:
    """A real-only phase asked of the embedded target alone is an error, with the fix."""
    asked = [p for p in phases if p in REAL_ONLY]
    if asked and "real" not in targets:
        raise ValueError(
            f"the {asked[0]} phase runs on the real target only (two gateway and two dispatcher "
            "processes on Mosquitto, PostgreSQL and Redis): add --target real"
        )
    if "embedded" in targets and not phases_for_target("embedded", phases):
        raise ValueError(
            f"--target embedded has nothing to run: {', '.join(phases)} is real-target only; "
            "use --target real"
        )


# --dispatcher-lanes split: the first copy runs the alarm lane (intake: event → call →
# consoles) alone, the others every other loop (carecall dispatcher --loops)
INTAKE_LANE = "intake"
OTHER_LANES = "timers,outbox,watchdog,visits,order_levels"


def dispatcher_loops_of(lanes: str, copies: int, phases: tuple[str, ...]) -> list[str]:
    """Each real-target dispatcher copy's CARECALL_DISPATCHER_LOOPS for --dispatcher-lanes."""
    if lanes == "all":
        return ["all"] * copies
    if lanes != "split":
        raise ValueError("--dispatcher-lanes must be all or split")
    if copies < 2:
        raise ValueError("--dispatcher-lanes split needs --dispatchers 2 or more (one intake copy, the rest)")
    if "copy-kill" in phases:
        raise ValueError("copy-kill kills one of two whole dispatcher copies: use --dispatcher-lanes all")
    return [INTAKE_LANE] + [OTHER_LANES] * (copies - 1)


def parse_phases(text: str) -> tuple[str, ...]:
    """``"quiet,contended"`` → ``("quiet", "contended")`` in the bench's own order;
    raises ValueError naming the unknown or missing phase."""
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    if not names:
        raise ValueError(f"--phases needs at least one of {', '.join(PHASES)}")
    unknown = [n for n in names if n not in PHASES]
    if unknown:
        raise ValueError(f"unknown phase {unknown[0]!r}: choose from {', '.join(PHASES)}")
    return tuple(p for p in PHASES if p in names)


def ratio(value: Any, reference: Any) -> float | None:
    """value / reference, or None when either is missing or the reference is not positive."""
    if isinstance(value, bool) or isinstance(reference, bool):
        return None
    if not isinstance(value, int | float) or not isinstance(reference, int | float) or reference <= 0:
        return None
    return round(value / reference, 2)


# (label, quiet figure key, other figure key)
CONTENDED_ROWS: tuple[tuple[str, str, str], ...] = (
    ("event→'received' ack p50 (ms)", "alarm_ack_p50_ms", "contended_alarm_ack_p50_ms"),
    ("event→'received' ack p99 (ms)", "alarm_ack_p99_ms", "contended_alarm_ack_p99_ms"),
    ("event→call on a console (SSE) p99 (ms)", "console_p99_ms", "contended_console_p99_ms"),
    ("escalation timer fired−due p99 (ms)", "timer_late_p99_ms", "contended_timer_late_p99_ms"),
    ("storm ack p50 (ms)", "storm_ack_p50_ms", "contended_storm_ack_p50_ms"),
    ("storm ack p99 (ms)", "storm_ack_p99_ms", "contended_storm_ack_p99_ms"),
    ("storm: not stored + not acked + not routed", "storm_lost", "contended_storm_lost"),
)
FLOOD_ROWS: tuple[tuple[str, str, str], ...] = (
    ("other devices' SOS ack p50 (ms)", "flood_quiet_ack_p50_ms", "flood_ack_p50_ms"),
    ("other devices' SOS ack p99 (ms)", "flood_quiet_ack_p99_ms", "flood_ack_p99_ms"),
    ("other devices' SOS not acked", "flood_quiet_unacked", "flood_unacked"),
)


def lane_rows(
    figures: Mapping[str, Any], phases: tuple[str, ...]
) -> list[tuple[str, str, Any, Any, float | None]]:
    """(section, label, quiet value, phase value, phase/quiet) for the phases that ran.

    The contended rows compare with the quiet phase of the same run (None when it did not
    run); the flood rows with the flood phase's own quiet leg just before the junk."""
    out: list[tuple[str, str, Any, Any, float | None]] = []
    if "contended" in phases:
        for label, quiet_key, key in CONTENDED_ROWS:
            q, v = figures.get(quiet_key), figures.get(key)
            out.append(("contended", label, q, v, ratio(v, q)))
    if "flood" in phases:
        for label, quiet_key, key in FLOOD_ROWS:
            q, v = figures.get(quiet_key), figures.get(key)
            out.append(("flood", label, q, v, ratio(v, q)))
    return out


def storm_lost(st: Mapping[str, Any]) -> int:
    """Storm events not stored, plus not acked, plus not routed into a call."""
    events = int(st["events"])
    return int(st["lost"]) + (events - int(st["acked"])) + (events - int(st["routed_into_calls"]))

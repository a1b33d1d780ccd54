"""``carecall bench``: how much CareCall carries on this machine, against a baseline measured
in the same run.

A throughput figure alone says little (is 8,000 msg/s good on this machine?), so every
run first measures the broker itself: paho → broker → paho, QoS 1, 200-byte payloads,
no CareCall. Then the platform, through the same broker with the same client library and
payload size:

- ingest: telemetry msg/s the gateway sustains with nothing lost (a rising ramp; a step
  passes when every message was counted by the gateway(s) within 1.5 s of its end);
- alarm path: event → committed → device ``received`` ack at 100 events/s with 5,000
  telemetry msg/s behind it, and at storm rate (5,000 alarms in 10 s): stored, acked,
  routed into calls;
- event → call visible to a console client subscribed to the "calls" push;
- escalation timers: fired-at minus due-at, from the timers table;
- CPU and memory of every process taking part;
- (issue 15, ``--phases``) the alarm path and storm again while a helper process holds
  one core (contended), and other devices' alarms during one device's junk flood (flood),
  each beside its quiet figure with the ratio (carecall/shell/bench_lanes.py);
- (issue 15, ``--phases copy-kill``, real target only) one of two dispatcher copies, then
  one of two gateway copies SIGKILLed mid-stream: the longest alarm wait, before vs
  after the kill in the same run, and the dead copy's escalation timers
  (carecall/shell/bench_copykill.py).

Targets are goals, not asserts: a miss is marked in the table and in the JSON.
Load goes to 127.0.0.1 only; every phase is bounded in count and time; every process the
bench starts is stopped (SIGTERM, then SIGKILL), every database it creates is dropped, and
on the real target every retained message under the run's device ids is cleared from the
shared broker (carecall/shell/bench_retained.py).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from carecall.shell.bench_compare import lane_rows, phases_for_target, runs_ingest, storm_lost
from carecall.shell.bench_copykill import copy_kill
from carecall.shell.bench_copykill_figures import GOAL_LONGEST_WAIT_MS
from carecall.shell.bench_lanes import contended, flood
from carecall.shell.bench_phases import alarm_path, baseline, ingest, storm, timer_lateness
from carecall.shell.bench_targets import (
    BenchConfig,
    ProcessMeter,
    Progress,
    Target,
    embedded_target,
    real_target,
    service_pids,
)
from simulators.loadgen import latency_summary

# Targets from the issue: (figure key, comparison, value, unit)
TARGETS: dict[str, tuple[str, float]] = {
    "ingest_ratio": (">=", 0.5),
    "alarm_ack_p99_ms": ("<=", 50.0),
    "storm_ack_p99_ms": ("<=", 1000.0),
    "storm_lost": ("<=", 0.0),
    "console_p99_ms": ("<=", 250.0),
    "timer_late_p99_ms": ("<=", 1000.0),
}

# Issue 15's copy-kill targets, judged when the phase ran: the longest wait after SIGKILL
# of 1 of 2 copies, and "same for dispatchers and timers"
COPYKILL_TARGETS: dict[str, tuple[str, float]] = {
    "copykill_gateway_longest_ms": ("<=", GOAL_LONGEST_WAIT_MS),
    "copykill_gateway_lost": ("<=", 0.0),
    "copykill_dispatcher_longest_ms": ("<=", GOAL_LONGEST_WAIT_MS),
    "copykill_dispatcher_lost": ("<=", 0.0),
    "copykill_timers_late_max_ms": ("<=", GOAL_LONGEST_WAIT_MS),
    "copykill_timers_missed": ("<=", 0.0),
}


def _quiet(t: Target, cfg: BenchConfig, sustained: float, say: Progress) -> dict[str, Any]:
    """The alarm path, the storm and the timers on an otherwise idle platform."""
    say("--- phase quiet")
    procs = {f"{w.name} (pid {w.proc.pid})": [w.proc.pid] for w in t.workers}
    procs["bench (load generator)"] = [os.getpid()]
    svc = service_pids()
    if t.name != "embedded":
        procs.update({k: v for k, v in svc.items() if v})
    meter = ProcessMeter(procs)
    meter.start()
    alarm = alarm_path(t, cfg, sustained, say)
    st = storm(t, cfg, say)
    usage = meter.stop()
    # read before the other phases add timers of their own
    timers = latency_summary(timer_lateness(t.db_url))
    say(f"escalation timers: {timers['count']} fired, late p50 {timers['p50']} ms, p99 {timers['p99']} ms")
    return {"alarm": alarm, "storm": st, "timers_ms": timers, "processes": usage}


def _quiet_figures(q: dict[str, Any]) -> dict[str, Any]:
    alarm, st, timers = q["alarm"], q["storm"], q["timers_ms"]
    return {
        "alarm_telemetry_behind_msg_s": alarm["telemetry_behind_msg_s"],
        "alarm_ack_p50_ms": alarm["ack_ms"]["p50"],
        "alarm_ack_p90_ms": alarm["ack_ms"]["p90"],
        "alarm_ack_p99_ms": alarm["ack_ms"]["p99"],
        "alarm_ack_max_ms": alarm["ack_ms"]["max"],
        "storm_ack_p50_ms": st["ack_ms"]["p50"],
        "storm_ack_p90_ms": st["ack_ms"]["p90"],
        "storm_ack_p99_ms": st["ack_ms"]["p99"],
        "storm_ack_max_ms": st["ack_ms"]["max"],
        "storm_lost": storm_lost(st),
        "console_p50_ms": alarm["console_ms"]["p50"],
        "console_p99_ms": alarm["console_ms"]["p99"],
        "timer_late_p50_ms": timers["p50"],
        "timer_late_p99_ms": timers["p99"],
    }


def _contended_figures(c: dict[str, Any]) -> dict[str, Any]:
    alarm, st = c["alarm"], c["storm"]
    return {
        "contended_alarm_ack_p50_ms": alarm["ack_ms"]["p50"],
        "contended_alarm_ack_p99_ms": alarm["ack_ms"]["p99"],
        "contended_console_p99_ms": alarm["console_ms"]["p99"],
        "contended_storm_ack_p50_ms": st["ack_ms"]["p50"],
        "contended_storm_ack_p99_ms": st["ack_ms"]["p99"],
        "contended_storm_lost": storm_lost(st),
        "contended_hog_cpu_pct": c["hog"]["cpu_pct"],
    }


def _flood_figures(f: dict[str, Any]) -> dict[str, Any]:
    q, leg = f["quiet"], f["flood"]
    return {
        "flood_quiet_ack_p50_ms": q["ack_ms"]["p50"],
        "flood_quiet_ack_p99_ms": q["ack_ms"]["p99"],
        "flood_quiet_unacked": q["unacked"],
        "flood_ack_p50_ms": leg["ack_ms"]["p50"],
        "flood_ack_p99_ms": leg["ack_ms"]["p99"],
        "flood_unacked": leg["unacked"],
        "flood_junk_per_s": f["junk_per_s"],
        "flood_own_sos_ack_ms": leg["own_sos_ack_ms"],
    }


def _copykill_figures(k: dict[str, Any]) -> dict[str, Any]:
    gw, dsp, tm = k["gateway"], k["dispatcher"], k["timers"]
    return {
        "copykill_gateway_longest_ms": gw["longest_ms"],
        "copykill_gateway_lost": gw["lost"],
        "copykill_dispatcher_longest_ms": dsp["longest_ms"],
        "copykill_dispatcher_lost": dsp["lost"] + dsp["received_lost"],
        "copykill_timers_late_max_ms": tm["late_ms"]["max"],
        "copykill_timers_missed": tm["missed"],
    }


def bench_target(t: Target, cfg: BenchConfig, say: Progress) -> dict[str, Any]:
    phases = phases_for_target("embedded" if t.name == "embedded" else "real", cfg.phases)
    base = baseline(t.host, t.port, t.observer_creds, cfg, say)
    figures: dict[str, Any] = {"baseline_msg_s": base["throughput_msg_s"]}
    if runs_ingest(phases):
        ing = ingest(t, base["throughput_msg_s"], cfg, say)
        ratio = ing["sustained_msg_s"] / base["throughput_msg_s"] if base["throughput_msg_s"] else 0.0
        figures.update({"ingest_msg_s": ing["sustained_msg_s"], "ingest_ratio": round(ratio, 3)})
    else:
        say("ingest ramp not run: copy-kill compares with its own pre-kill window")
        ing = {"sustained_msg_s": None, "steps": [], "skipped": True}
        figures.update({"ingest_msg_s": None, "ingest_ratio": None})
    out: dict[str, Any] = {"target": t.name, "phases": list(phases), "baseline": base, "ingest": ing}
    out["processes"] = {}
    if "quiet" in phases:
        q = _quiet(t, cfg, ing["sustained_msg_s"], say)
        out.update(q)
        figures.update(_quiet_figures(q))
    if "contended" in phases:
        say("--- phase contended")
        out["contended"] = contended(t, cfg, ing["sustained_msg_s"], say)
        figures.update(_contended_figures(out["contended"]))
    if "flood" in phases:
        say("--- phase flood")
        out["flood"] = flood(t, cfg, say)
        figures.update(_flood_figures(out["flood"]))
    if "copy-kill" in phases:  # last: it leaves one gateway and one dispatcher copy dead
        say("--- phase copy-kill")
        out["copy-kill"] = copy_kill(t, cfg, say)
        figures.update(_copykill_figures(out["copy-kill"]))
    elif "copy-kill" in cfg.phases:
        say("--- phase copy-kill: real target only, not run on this one")
    out["figures"] = figures
    out["missed"] = missed(figures, phases)
    return out


def missed(figures: dict[str, Any], phases: tuple[str, ...] = ("quiet",)) -> list[str]:
    """Targets missed: issue 6's (the quiet phase's figures count only when it ran, the
    ingest ratio only when the ramp ran) and issue 15's copy-kill ones when it ran."""
    out: list[str] = []
    targets = dict(TARGETS)
    if "copy-kill" in phases:
        targets.update(COPYKILL_TARGETS)
    for key, (op, goal) in targets.items():
        if key == "ingest_ratio" and not runs_ingest(phases):
            continue
        if key != "ingest_ratio" and key not in COPYKILL_TARGETS and "quiet" not in phases:
            continue
        value = figures.get(key)
        if value is None:
            out.append(key)
        elif (op == ">=" and value < goal) or (op == "<=" and value > goal):
            out.append(key)
    return out


# --------------------------------------------------------------------------- report


ROWS: list[tuple[str, str, str]] = [
    # (figure key, label, baseline key for the ratio column)
    ("baseline_msg_s", "baseline paho→broker→paho throughput (msg/s)", ""),
    ("ingest_msg_s", "ingest: telemetry sustained, no loss (msg/s)", "baseline_msg_s"),
    ("alarm_telemetry_behind_msg_s", "telemetry behind the alarm path (msg/s; goal 5,000)", ""),
    ("alarm_ack_p50_ms", "event→'received' ack p50 @100 events/s (ms)", "baseline_p50_ms"),
    ("alarm_ack_p90_ms", "  p90 (ms)", "baseline_p50_ms"),
    ("alarm_ack_p99_ms", "  p99 (ms)", "baseline_p99_ms"),
    ("alarm_ack_max_ms", "  max (ms)", "baseline_p99_ms"),
    ("storm_ack_p50_ms", "storm ack p50 (ms)", "baseline_p50_ms"),
    ("storm_ack_p90_ms", "  p90 (ms)", "baseline_p50_ms"),
    ("storm_ack_p99_ms", "  p99 (ms)", "baseline_p99_ms"),
    ("storm_ack_max_ms", "  max (ms)", "baseline_p99_ms"),
    ("storm_lost", "storm: not stored + not acked + not routed", ""),
    ("console_p50_ms", "event→call on a console p50 (ms)", "baseline_p50_ms"),
    ("console_p99_ms", "  p99 (ms)", "baseline_p99_ms"),
    ("timer_late_p50_ms", "escalation timer fired−due p50 (ms)", ""),
    ("timer_late_p99_ms", "  p99 (ms)", ""),
]


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for tr in result["targets"]:
        base = tr["baseline"]
        ref = {
            "baseline_msg_s": base["throughput_msg_s"],
            "baseline_p50_ms": base["latency_ms_at_1k"]["p50"],
            "baseline_p99_ms": base["latency_ms_at_1k"]["p99"],
        }
        lines.append(
            f"\n== {tr['target']}  (baseline latency at 1k msg/s: p50 {ref['baseline_p50_ms']} ms, p99 {ref['baseline_p99_ms']} ms)"
        )
        lines.append(f"{'figure':<58} {'value':>10} {'target':>10} {'× baseline':>11}  ")
        phases = tuple(tr.get("phases", ("quiet",)))
        for key, label, ref_key in ROWS:
            if "quiet" not in phases and key not in ("baseline_msg_s", "ingest_msg_s"):
                continue
            value = tr["figures"].get(key)
            goal = TARGETS.get(key)
            if key == "ingest_msg_s":
                goal_s = "≥0.5×"
            else:
                goal_s = f"{goal[0]}{_fmt(goal[1])}" if goal else ""
            r = ref.get(ref_key) if ref_key else None
            ratio = f"{value / r:,.2f}" if isinstance(value, int | float) and r else ""
            mark = ""
            if key in tr["missed"] or (key == "ingest_msg_s" and "ingest_ratio" in tr["missed"]):
                mark = "MISSED"
            lines.append(f"{label:<58} {_fmt(value):>10} {goal_s:>10} {ratio:>11}  {mark}")
        lines.append(
            f"{'ingest ratio to baseline':<58} {_fmt(tr['figures']['ingest_ratio']):>10} {'≥0.5':>10}"
        )
        if tr["processes"]:
            lines.append("processes during the quiet alarm and storm phases:")
        for name, u in tr["processes"].items():
            lines.append(f"  {name:<40} CPU {u['cpu_pct']:>6.1f} %   RSS peak {u['rss_peak_mb']:>8.1f} MB")
        lines.extend(_render_lanes(tr, phases))
        lines.extend(render_copykill(tr))
        judged = "" if "quiet" in phases else " (quiet phase not run: only the ingest ratio judged)"
        if not runs_ingest(phases):
            judged = " (quiet phase and ingest ramp not run)"
        label = "issue 6, issue 15 copy-kill" if "copy-kill" in phases else "issue 6"
        lines.append(f"missed targets ({label}){judged}: " + (", ".join(tr["missed"]) or "none"))
    return "\n".join(lines)


def _render_lanes(tr: dict[str, Any], phases: tuple[str, ...]) -> list[str]:
    """The contended and flood rows beside their quiet figures, with phase/quiet ratios.
    No targets here: issue 15's are for full runs on the same machine, not for a table."""
    rows = lane_rows(tr["figures"], phases)
    if not rows:
        return []
    lines = [f"{'lane phase: figure':<58} {'quiet':>10} {'phase':>10} {'× quiet':>11}"]
    for section, label, quiet, value, r in rows:
        lines.append(f"{section + ': ' + label:<58} {_fmt(quiet):>10} {_fmt(value):>10} {_fmt(r):>11}")
    if "contended" in phases:
        hog = tr["contended"]["hog"]
        lines.append(
            f"contended: CPU hog pid {hog['pid']} used {hog['cpu_pct']} % of a core over {hog['ran_s']} s, exit {hog['exit_code']}"
        )
    if "flood" in phases:
        f = tr["flood"]
        own = f["flood"]["own_sos_ack_ms"]
        lines.append(
            f"flood: {f['junk_sent']:,} malformed messages at {f['junk_per_s']:,}/s from one device, "
            f"{f['gateway_rejections']:,} rejections counted; alarms at {_fmt(f['alarms_per_s'])}/s from others; "
            f"the flooding device's own SOS: {'acked in ' + _fmt(own) + ' ms' if own is not None else 'NOT acked'}"
        )
    return lines


def render_copykill(tr: dict[str, Any]) -> list[str]:
    """The copy-kill rows: before / after the kill (same run), after ÷ before, the target."""
    k = tr.get("copy-kill")
    if not k:
        return []
    goal = _fmt(k["goal_ms"])
    lines = [
        f"copy-kill: {k['rate_per_s']:g} alarms/s for {k['leg_s']:g} s per leg, one alarm per device "
        f"({k['telemetry_per_s']:,.0f} telemetry/s behind the gateway leg's), SIGKILL at "
        f"{k['kill_at_fraction']:.0%} of the stream; before = sent and answered before the kill",
        f"{'copy-kill: figure':<58} {'before':>10} {'after':>10} {'× before':>11}  target",
    ]
    for leg, what in (("gateway", "'received'"), ("dispatcher", "'assigned'")):
        f = k[leg]
        b, a = f["before_ms"], f["after_ms"]
        name = f"{leg} copy killed: event→{what}"
        for q in ("p50", "p99", "max"):
            r = f[f"ratio_{q}"]
            lines.append(f"{name + ' ' + q + ' (ms)':<58} {_fmt(b[q]):>10} {_fmt(a[q]):>10} {_fmt(r):>11}")
        lines.append(
            f"{name + ' longest wait (ms)':<58} {'':>10} {_fmt(f['longest_ms']):>10} {'':>11}  "
            f"≤{goal}: {f['verdict']}"
        )
        lost = f["lost"] + f.get("received_lost", 0)
        lines.append(
            f"{'  alarms sent / answered / lost':<58} {'':>10} "
            f"{str(f['sent']) + ' / ' + str(f['answered']) + ' / ' + str(lost):>22}  lost 0"
        )
        lines.append(
            f"  killed {f['killed']} pid {f['killed_pid']} ({'gone' if f['killed_pid_gone'] else 'STILL RUNNING'}); "
            f"in flight at the kill {f['in_flight_at_kill']}; handled before the kill: "
            + ", ".join(f"{n} {c}" for n, c in f["handled_before_kill"].items())
        )
        if f.get("overloaded_before_kill"):
            lines.append("  OVERLOADED before the kill (p99 over the goal already): 'after' measures that too")
    tm = k["timers"]
    late, base = tm["late_ms"], tm["before_late_ms"]
    for q in ("p50", "p99"):
        r = tm[f"ratio_{q}"]
        lines.append(
            f"{'timers of the dead copy: fired−due ' + q + ' (ms)':<58} {_fmt(base[q]):>10} {_fmt(late[q]):>10} {_fmt(r):>11}"
        )
    lines.append(
        f"{'timers of the dead copy: fired−due max (ms)':<58} {_fmt(base['max']):>10} {_fmt(late['max']):>10} "
        f"{'':>11}  ≤{goal}: {tm['verdict']}"
    )
    lines.append(
        f"  timers of the dead copy's calls due while it was dead (up to {tm['window_s']:g} s after the "
        f"kill): {tm['due_after_kill']}, fired {tm['fired']}, not fired {tm['missed']}; before = the leg's "
        f"{tm['before_fired']} timers due and fired before the kill"
    )
    return lines


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_bench(cfg: BenchConfig, say: Progress) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join(["carecall bench", *sys.argv[2:]]) if len(sys.argv) > 1 else "carecall bench",
        "quick": cfg.quick,
        "targets": [],
    }
    with tempfile.TemporaryDirectory(prefix="carecall-bench-") as tmp:
        workdir = Path(tmp)
        for name in cfg.targets:
            say(f"--- target {name}")
            ctx = embedded_target(cfg, workdir, say) if name == "embedded" else real_target(cfg, workdir, say)
            with ctx as target:
                result["targets"].append(bench_target(target, cfg, say))
    result["seconds"] = round(time.monotonic() - started, 1)
    return result

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
- event → call on a console: a real SSE client (carecall/shell/bench_console.py) signed in
  as a county operator reads ``GET /api/v1/stream`` from the platform's web app (a
  ``carecall serve`` worker on the real target, the embedded process itself otherwise);
  beside it the older "bus" figure, the first sight of the call on the push the web app
  relays (Redis ``carecall:calls``; the in-process bus on the embedded target);
- escalation timers: fired-at minus due-at, from the timers table;
- CPU and memory of every process taking part;
- (issue 15, ``--phases``) the alarm path and storm again while a helper process holds
  one core, with the timers of those calls due meanwhile (contended), and other devices'
  alarms during one device's junk flood (flood), each beside its quiet figure with the
  ratio (carecall/shell/bench_lanes.py);
- (issue 15, ``--phases copy-kill``, real target only) one of two dispatcher copies, then
  one of two gateway copies SIGKILLed mid-stream: the longest alarm wait, before vs
  after the kill in the same run, and the dead copy's escalation timers
  (carecall/shell/bench_copykill.py).

Targets are goals, not asserts: issue 15's table (and issue 6's ingest ratio) is judged
by carecall/shell/bench_verdicts.py and printed with each figure, its goal, its ratio to
the same run's broker latency and the verdict (met, MISSED, not judged: a ``--quick`` run
judges nothing); the JSON carries every figure and verdict.
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

from carecall.core import heap
from carecall.shell.bench_compare import lane_rows, phases_for_target, runs_ingest, storm_lost
from carecall.shell.bench_copykill import copy_kill
from carecall.shell.bench_lanes import contended, flood
from carecall.shell.bench_meter import ProcessMeter
from carecall.shell.bench_phases import alarm_path, baseline, ingest, storm, timer_lateness
from carecall.shell.bench_targets import (
    BenchConfig,
    Progress,
    Target,
    embedded_target,
    real_target,
    service_pids,
)
from carecall.shell.bench_verdicts import MET, MISSED, Verdict, judge, missed_ids
from config.settings import load_settings
from simulators.loadgen import latency_summary


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
    bus = alarm.get("bus_ms") or {}
    return {
        "alarm_telemetry_behind_msg_s": alarm["telemetry_behind_msg_s"],
        "alarm_ack_p50_ms": alarm["ack_ms"]["p50"],
        "alarm_ack_p90_ms": alarm["ack_ms"]["p90"],
        "alarm_ack_p99_ms": alarm["ack_ms"]["p99"],
        "alarm_ack_max_ms": alarm["ack_ms"]["max"],
        "alarm_ack_in_gateway_p50_ms": (alarm.get("gateway_ack_ms") or {}).get("p50"),
        "alarm_ack_in_gateway_p99_ms": (alarm.get("gateway_ack_ms") or {}).get("p99"),
        "alarm_unacked": alarm["unacked"],
        "storm_ack_p50_ms": st["ack_ms"]["p50"],
        "storm_ack_p90_ms": st["ack_ms"]["p90"],
        "storm_ack_p99_ms": st["ack_ms"]["p99"],
        "storm_ack_max_ms": st["ack_ms"]["max"],
        "storm_lost": storm_lost(st),
        "console_p50_ms": alarm["console_ms"]["p50"],
        "console_p99_ms": alarm["console_ms"]["p99"],
        "console_calls": alarm["opened"],
        "console_missing": alarm["console_missing"],
        "bus_p50_ms": bus.get("p50"),
        "bus_p99_ms": bus.get("p99"),
        "timer_late_p50_ms": timers["p50"],
        "timer_late_p99_ms": timers["p99"],
        "timers_fired": timers["count"],
    }


def _contended_figures(c: dict[str, Any]) -> dict[str, Any]:
    alarm, st, tm = c["alarm"], c["storm"], c["timers"]
    return {
        "contended_alarm_telemetry_behind_msg_s": alarm["telemetry_behind_msg_s"],
        "contended_alarm_ack_p50_ms": alarm["ack_ms"]["p50"],
        "contended_alarm_ack_p99_ms": alarm["ack_ms"]["p99"],
        "contended_alarm_unacked": alarm["unacked"],
        "contended_console_p99_ms": alarm["console_ms"]["p99"],
        "contended_console_missing": alarm["console_missing"],
        "contended_bus_p99_ms": (alarm.get("bus_ms") or {}).get("p99"),
        "contended_storm_ack_p50_ms": st["ack_ms"]["p50"],
        "contended_storm_ack_p99_ms": st["ack_ms"]["p99"],
        "contended_storm_lost": storm_lost(st),
        "contended_timer_late_p50_ms": tm["late_ms"]["p50"],
        "contended_timer_late_p99_ms": tm["late_ms"]["p99"],
        "contended_timers_due": tm["due"],
        "contended_timers_unfired": tm["unfired"],
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
        "flood_own_sos_unacked": 0 if leg["own_sos_ack_ms"] is not None else 1,
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
        # "not measured": the killed copy had handled nothing, or no timer of its came due
        "copykill_gateway_measured": gw["verdict"] != "not measured",
        "copykill_dispatcher_measured": dsp["verdict"] != "not measured",
        "copykill_timers_measured": tm["verdict"] != "not measured",
    }


def bench_target(t: Target, cfg: BenchConfig, say: Progress) -> dict[str, Any]:
    phases = phases_for_target("embedded" if t.name == "embedded" else "real", cfg.phases)
    # The bench plays the devices and the consoles: a pause of its own collector (a full
    # one took up to 0.48 s here) would be counted in every latency it measures. Frozen
    # as the platform's processes freeze theirs (CARECALL_GC_FREEZE; carecall/core/heap.py).
    heap.watch()  # its own pauses are reported beside the workers' (bench_phases.gc_pauses)
    heap.settle("bench", load_settings().gc_freeze)
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
    out["console_client"] = {"via": t.console_via, **(t.console_stats() if t.console_stats else {})}
    verdicts = judge(
        figures,
        target="embedded" if t.name == "embedded" else "real",
        ran=(*phases, "ingest") if runs_ingest(phases) else phases,
        quick=cfg.quick,
        baseline_p99_ms=base["latency_ms_at_1k"]["p99"],
    )
    out["verdicts"] = [v.as_dict() for v in verdicts]
    out["missed"] = missed_ids(verdicts)
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
    (
        "alarm_ack_in_gateway_p50_ms",
        "  inside the gateway (receipt → ack handed on) p50 (ms)",
        "baseline_p50_ms",
    ),
    ("alarm_ack_in_gateway_p99_ms", "  inside the gateway p99 (ms)", "baseline_p99_ms"),
    ("storm_ack_p50_ms", "storm ack p50 (ms)", "baseline_p50_ms"),
    ("storm_ack_p90_ms", "  p90 (ms)", "baseline_p50_ms"),
    ("storm_ack_p99_ms", "  p99 (ms)", "baseline_p99_ms"),
    ("storm_ack_max_ms", "  max (ms)", "baseline_p99_ms"),
    ("storm_lost", "storm: not stored + not acked + not routed", ""),
    ("console_p50_ms", "event→call on a console (SSE client) p50 (ms)", "baseline_p50_ms"),
    ("console_p99_ms", "  p99 (ms)", "baseline_p99_ms"),
    ("console_missing", "  calls the console never showed", ""),
    ("bus_p50_ms", "event→call on the bus the web app relays p50 (ms)", "baseline_p50_ms"),
    ("bus_p99_ms", "  p99 (ms)", "baseline_p99_ms"),
    ("timer_late_p50_ms", "escalation timer fired−due p50 (ms)", "baseline_p50_ms"),
    ("timer_late_p99_ms", "  p99 (ms)", "baseline_p99_ms"),
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
        phases = tuple(tr.get("phases", ("quiet",)))
        alarm = tr.get("alarm") or {}
        if "quiet" in phases and alarm.get("console_via"):
            lines.append(f"console: {alarm['console_via']}; bus: {alarm.get('bus_via') or '—'}")
        lines.append(f"{'figure':<58} {'value':>10} {'× baseline':>11}")
        for key, label, ref_key in ROWS:
            if "quiet" not in phases and key not in ("baseline_msg_s", "ingest_msg_s"):
                continue
            value = tr["figures"].get(key)
            r = ref.get(ref_key) if ref_key else None
            ratio = f"{value / r:,.2f}" if isinstance(value, int | float) and r else ""
            lines.append(f"{label:<58} {_fmt(value):>10} {ratio:>11}")
        if tr["processes"]:
            lines.append(
                "processes during the quiet alarm and storm phases (waiting: runnable, no core free;"
                " % of one core's time):"
            )
        for name, u in tr["processes"].items():
            wait = u.get("cpu_wait_pct")
            waited = f"waiting for a core {wait:>6.1f} %" if isinstance(wait, int | float) else " " * 27
            lines.append(
                f"  {name:<40} CPU {u['cpu_pct']:>6.1f} %   {waited}   RSS peak {u['rss_peak_mb']:>8.1f} MB"
            )
        lines.extend(_render_lanes(tr, phases))
        lines.extend(render_copykill(tr))
        lines.extend(render_verdicts(tr, ref["baseline_p99_ms"], bool(result.get("quick"))))
    return "\n".join(lines)


def _goal_text(v: Verdict) -> str:
    op = {"<=": "≤", ">=": "≥"}.get(v.op, v.op)
    goal = f"{v.goal:,.0f}" if v.goal >= 1000 else f"{v.goal:g}"
    return f"{op}{goal}×" if v.unit == "×" else f"{op}{goal} {v.unit}"


def render_verdicts(tr: dict[str, Any], baseline_p99: Any, quick: bool) -> list[str]:
    """Issue 15's targets (and issue 6's ingest ratio) for the phases that ran: the
    figure, the goal, the figure ÷ the same run's broker p99 at 1k msg/s, the verdict."""
    verdicts = [Verdict(**v) for v in tr.get("verdicts", [])]
    if not verdicts:
        return []
    lines = [
        f"targets (issue 15; issue 6: the ingest ratio) — × baseline = figure ÷ this run's broker "
        f"p99 at 1k msg/s ({_fmt(baseline_p99)} ms)",
        f"{'target':<62} {'value':>10} {'goal':>10} {'× baseline':>11}  verdict",
    ]
    for v in verdicts:
        shown = {MET: "met", MISSED: "MISSED"}.get(v.status, v.status)
        why = f" ({v.reason})" if v.reason else ""
        ratio = _fmt(v.ratio) if v.ratio is not None else ""
        lines.append(f"{v.label:<62} {_fmt(v.value):>10} {_goal_text(v):>10} {ratio:>11}  {shown}{why}")
    judged = sum(1 for v in verdicts if v.status in (MET, MISSED))
    note = " (a --quick run judges nothing)" if quick else f" ({judged} of {len(verdicts)} judged)"
    lines.append(f"missed targets{note}: " + (", ".join(tr["missed"]) or "none"))
    return lines


def _render_lanes(tr: dict[str, Any], phases: tuple[str, ...]) -> list[str]:
    """The contended and flood rows beside their quiet figures, with phase/quiet ratios
    (their targets are judged in the targets table)."""
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
        tm = tr["contended"].get("timers")
        if tm:
            lines.append(
                f"contended: timers of its calls due while the core was held: {tm['due']:,}, fired "
                f"{tm['fired']:,}, not fired {tm['unfired']:,}"
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
            lines.append(
                "  OVERLOADED before the kill (p99 over the goal already): 'after' measures that too"
            )
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

"""CPU, time spent waiting for a CPU, and resident memory of the bench's processes.

The wait is the kernel's own account (``/proc/PID/task/TID/schedstat``, second field:
nanoseconds a runnable thread spent on a run queue, not running). On a machine whose
cores are all busy it is what a process's round trips really cost: each reply wakes a
process that then waits for a core. Measured on the 2-core machine during the quiet
alarm phase (2026-12-07): every platform process waited about as long as it ran, and a
trivial statement (``SET LOCAL``) took 2.5 ms p50 from the intake copy's side. Without
schedstat (not Linux, or a kernel without it) the wait is reported as None.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psutil


def run_queue_wait_s(pid: int) -> float | None:
    """Seconds the threads of ``pid`` have spent runnable but not running, so far
    (threads that have ended are not counted); None where the kernel does not say."""
    tasks = Path(f"/proc/{pid}/task")
    total = 0
    found = False
    try:
        entries = list(tasks.iterdir())
    except OSError:
        return None
    for task in entries:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int((task / "schedstat").read_text().split()[1])
            found = True
    return total / 1e9 if found else None


class ProcessMeter:
    """CPU seconds, run-queue wait and resident memory of named processes between start()
    and stop()."""

    def __init__(self, procs: dict[str, list[int]]) -> None:
        self._procs = {
            name: [psutil.Process(p) for p in pids if psutil.pid_exists(p)] for name, pids in procs.items()
        }
        self._t0 = 0.0
        self._cpu0: dict[str, float] = {}
        self._wait0: dict[int, float] = {}
        self._rss_peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _cpu(self, name: str) -> float:
        total = 0.0
        for p in self._procs[name]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _waits(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for procs in self._procs.values():
            for p in procs:
                w = run_queue_wait_s(p.pid)
                if w is not None:
                    out[p.pid] = w
        return out

    def _rss(self, name: str) -> float:
        total = 0.0
        for p in self._procs[name]:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for name in self._procs:
                self._rss_peak[name] = max(self._rss_peak.get(name, 0.0), self._rss(name))

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {n: self._cpu(n) for n in self._procs}
        self._wait0 = self._waits()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, dict[str, float | None]]:
        wall = time.monotonic() - self._t0
        waits = self._waits()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        out: dict[str, dict[str, float | None]] = {}
        for name, procs in self._procs.items():
            cpu = self._cpu(name) - self._cpu0.get(name, 0.0)
            seen = [p.pid for p in procs if p.pid in waits and p.pid in self._wait0]
            waited = sum(waits[pid] - self._wait0[pid] for pid in seen)
            out[name] = {
                "cpu_pct": round(100 * cpu / wall, 1) if wall > 0 else 0.0,
                # % of one core's time its threads spent runnable but waiting for a core
                "cpu_wait_pct": round(100 * waited / wall, 1) if wall > 0 and seen else None,
                "rss_peak_mb": round(max(self._rss_peak.get(name, 0.0), self._rss(name)), 1),
                "processes": len(procs),
            }
        return out

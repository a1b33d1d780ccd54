"""The contended phase's helper: a child process that keeps one core busy with a plain CPU
loop while the bench re-runs the alarm path and the storm (issue 15).

It is bounded three ways, so it can never outlive the bench:

- the bench stops it (SIGTERM, then SIGKILL) when the phase ends, also on an error or a
  KeyboardInterrupt (``CpuHog`` is a context manager; leaving it stops the child);
- it leaves its loop by itself after its own time limit, and as soon as its parent is gone
  (it is re-parented when the bench is SIGKILLed);
- the kernel ends it after its CPU-time limit (``RLIMIT_CPU``, set by the child on itself),
  even if the loop were stuck.

It runs in its own session, so a Ctrl-C in the terminal reaches the bench, whose cleanup
stops it, rather than killing it behind the bench's back.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from types import TracebackType

import psutil

# argv: time limit (s), parent pid. Checks the clock and the parent every 100k turns
# (a few milliseconds), so it stops promptly; otherwise only arithmetic.
_LOOP = r"""
import os, resource, sys, time
limit, parent = float(sys.argv[1]), int(sys.argv[2])
cpu = int(limit) + 2
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
end = time.monotonic() + limit
print("ready", flush=True)
x = 0
while True:
    for _ in range(100_000):
        x = (x * 31 + 7) & 0xFFFF
    if time.monotonic() >= end or os.getppid() != parent:
        break
"""

MARKER = "carecall-bench-cpu-hog"


class CpuHog:
    """One child process spinning on a core for at most ``limit_s`` seconds."""

    def __init__(self, limit_s: float) -> None:
        if not math.isfinite(limit_s) or limit_s <= 0:
            raise ValueError(f"CPU hog time limit must be a positive number of seconds, got {limit_s!r}")
        self.limit_s = limit_s
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0.0
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("CPU hog not started")
        return self.proc.pid

    def start(self) -> CpuHog:
        if self.proc is not None:
            raise RuntimeError("CPU hog already started")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LOOP, f"{self.limit_s:.3f}", str(os.getpid()), MARKER],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self.started = time.monotonic()
        try:
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline().strip()
        except BaseException:  # an interrupt while it starts: it must not outlive us
            self.stop()
            raise
        if line != "ready":
            self.stop()
            raise RuntimeError(f"CPU hog did not start: {line!r}")
        return self

    def _cpu_now(self) -> float:
        if self.proc is None:
            return 0.0
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(self.proc.pid).cpu_times()
            return float(t.user + t.system)
        return self.cpu_s

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL) and reap it; safe to call twice."""
        proc = self.proc
        if proc is None or self.exit_code is not None:
            return
        self.cpu_s = max(self.cpu_s, self._cpu_now())
        self.wall_s = time.monotonic() - self.started
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            self.exit_code = proc.returncode

    def report(self) -> dict[str, float | int | None]:
        """The child's pid, the share of one core it used while it ran, and how it ended."""
        return {
            "pid": self.proc.pid if self.proc is not None else None,
            "limit_s": self.limit_s,
            "ran_s": round(self.wall_s, 2),
            "cpu_pct": round(100 * self.cpu_s / self.wall_s, 1) if self.wall_s > 0 else 0.0,
            "exit_code": self.exit_code,
        }

    def __enter__(self) -> CpuHog:
        return self.start()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

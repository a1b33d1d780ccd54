"""The bench's process meter: CPU and the time spent waiting for a core (schedstat)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carecall.shell.bench_meter import ProcessMeter, run_queue_wait_s

pytestmark = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task").is_dir() or run_queue_wait_s(os.getpid()) is None,
    reason="no /proc/PID/task/TID/schedstat here (not Linux, or a kernel without schedstats)",
)

_SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def _spinners(n: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``n`` CPU loops pinned to one core, so each waits while the others run."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN.format(s=seconds)]) for _ in range(n)]
    for p in procs:
        os.sched_setaffinity(p.pid, {cpu})
    return procs


def test_two_loops_on_one_core_each_wait_about_half_the_time() -> None:
    procs = _spinners(2, 1.5)
    try:
        time.sleep(0.1)
        meter = ProcessMeter({"spinners": [p.pid for p in procs], "me": [os.getpid()]})
        meter.start()
        time.sleep(1.0)
        out = meter.stop()
    finally:
        for p in procs:
            p.wait(10)
    spin = out["spinners"]
    # two loops sharing one core: ~100 % of a core between them, and as much waiting
    assert 70 <= spin["cpu_pct"] <= 110
    wait = spin["cpu_wait_pct"]
    assert isinstance(wait, float) and 60 <= wait <= 120
    # the test process itself mostly slept: it did not wait for a core for long
    me_wait = out["me"]["cpu_wait_pct"]
    assert isinstance(me_wait, float) and me_wait < 30


def test_a_process_gone_has_no_wait_figure() -> None:
    assert run_queue_wait_s(2**22 + 12345) is None

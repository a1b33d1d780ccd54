"""The contended phase's CPU hog can never outlive the bench: stopped on the way out of
its block (also on an error or Ctrl-C), by its own time limit, and when its parent dies."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from carecall.shell.bench_hog import CpuHog


def gone(pid: int, within_s: float) -> bool:
    """True once pid no longer runs (reaped, or a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_hog_burns_a_core_while_held_and_is_stopped_after() -> None:
    with CpuHog(30) as hog:
        pid = hog.pid
        time.sleep(0.5)
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    assert not psutil.pid_exists(pid) or gone(pid, 0)
    rep = hog.report()
    assert rep["pid"] == pid and rep["exit_code"] is not None
    assert isinstance(rep["cpu_pct"], float) and rep["cpu_pct"] > 0


@pytest.mark.parametrize("error", [RuntimeError("phase failed"), KeyboardInterrupt()])
def test_hog_is_stopped_when_the_phase_fails_or_is_interrupted(error: BaseException) -> None:
    pids: list[int] = []
    with pytest.raises(type(error)), CpuHog(30) as hog:
        pids.append(hog.pid)
        raise error
    assert gone(pids[0], 5)


def test_hog_stops_itself_after_its_time_limit() -> None:
    hog = CpuHog(0.5).start()
    try:
        assert hog.proc is not None
        assert hog.proc.wait(10) == 0  # left its loop by itself, not killed
    finally:
        hog.stop()


def test_hog_stops_when_its_parent_is_killed() -> None:
    # a parent that starts a hog and dies without any cleanup (as under SIGKILL)
    code = (
        "import os\n"
        "from carecall.shell.bench_hog import CpuHog\n"
        "h = CpuHog(60).start()\n"
        "print(h.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    pid = int(out.stdout.strip())
    assert gone(pid, 10), f"CPU hog {pid} outlived its parent"


def test_bad_limit_is_refused() -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive"):
            CpuHog(bad)

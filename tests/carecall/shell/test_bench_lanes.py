"""``carecall bench --quick`` with the lane phases (issue 15) on the embedded target: a
crash and correctness check, not a timing test. The report carries the contended and
flood rows with their quiet figures, and the CPU hog is gone after the run (by PID).

The platform is started by the bench itself (amqtt + SQLite in a worker process), so the
test runs the command as a user would, in a process of its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from carecall.shell.bench_hog import MARKER

pytestmark = [pytest.mark.slow, pytest.mark.bench]


def hog_running(pid: int) -> bool:
    """True while pid is our CPU hog (a reused pid running something else does not count)."""
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and MARKER in " ".join(p.cmdline())
    except psutil.Error:
        return False


def test_quick_bench_reports_contended_and_flood_and_leaves_no_hog(tmp_path: Path) -> None:
    out_json = tmp_path / "bench.json"
    env = {**os.environ, "CARECALL_LOG_LEVEL": "WARNING", "COLUMNS": "200"}
    env.pop("CARECALL_DATABASE_URL", None)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "carecall.shell.cli",
            "bench",
            "--quick",
            "--target",
            "embedded",
            "--phases",
            "contended,flood",
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=280,  # a busy shared machine is slow; the bench bounds every phase itself
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = run.stdout
    # progress went to stderr, one line per phase at least
    assert "--- phase contended" in run.stderr and "--- phase flood" in run.stderr
    assert "--- phase quiet" not in run.stderr
    for row in (
        "contended: event→'received' ack p50 (ms)",
        "contended: event→'received' ack p99 (ms)",
        "contended: event→call on a console p99 (ms)",
        "contended: storm ack p99 (ms)",
        "contended: storm: not stored + not acked + not routed",
        "flood: other devices' SOS ack p50 (ms)",
        "flood: other devices' SOS ack p99 (ms)",
        "flood: other devices' SOS not acked",
    ):
        assert row in report, f"missing row {row!r} in:\n{report}"
    assert "× quiet" in report
    assert "quiet phase not run: only the ingest ratio judged" in report
    # the quiet phase did not run: none of its rows, and no target judged on them
    assert "storm ack p50 (ms)" not in report.replace("contended: storm ack p50 (ms)", "")

    result = json.loads(out_json.read_text(encoding="utf-8"))
    (tr,) = result["targets"]
    assert tr["phases"] == ["contended", "flood"]
    hog = tr["contended"]["hog"]
    assert isinstance(hog["pid"], int) and hog["exit_code"] is not None
    assert f"CPU hog pid {hog['pid']}" in run.stderr
    assert not hog_running(hog["pid"]), f"CPU hog {hog['pid']} outlived the bench"
    # the platform worker the bench started is gone too
    (worker,) = re.findall(r"embedded target up: .*\(pid (\d+)\)", run.stderr)
    assert not psutil.pid_exists(int(worker)) or psutil.Process(int(worker)).status() == psutil.STATUS_ZOMBIE

    fl = tr["flood"]
    assert fl["junk_sent"] > 0 and fl["junk_publish_errors"] == 0
    # the junk reached the gateway and was refused there, counted, not silently dropped
    assert fl["gateway_rejections"] > 0
    figures = tr["figures"]
    # the flood's own quiet leg ran and its alarms were measured (latency is not judged)
    assert fl["quiet"]["events"] > 0 and fl["flood"]["events"] > 0
    assert figures["flood_quiet_ack_p99_ms"] is not None
    assert tr["contended"]["storm"]["events"] > 0
    assert tr["contended"]["alarm"]["events"] > 0

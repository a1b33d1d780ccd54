"""A bench platform worker cannot outlive the bench: started with ``--parent`` (as
``start_worker`` does), it stops by itself once its parent is gone, even when the parent
was SIGKILLed and never stopped it (on the real target it would otherwise stay on the
shared broker, taking other people's device messages)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil


def gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_worker_stops_when_the_bench_is_killed(tmp_path: Path) -> None:
    # a bench that starts an embedded worker, waits until it is up, and dies without any
    # cleanup (as under SIGKILL)
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from carecall.shell.bench_targets import free_port, start_worker, wait_ready\n"
        "work = Path(sys.argv[1])\n"
        "env = {'CARECALL_DATABASE_URL': f'sqlite:///{work}/w.db',\n"
        "       'CARECALL_EMBEDDED_MQTT_PORT': str(free_port()),\n"
        "       'CARECALL_BENCH_PLATFORM_PASSWORD': 'bench-test-password',\n"
        "       'CARECALL_INSTANCE': 'bench-orphan-test'}\n"
        "w = start_worker('embedded', 'embedded', env, work)\n"
        "wait_ready([w], 120)\n"
        "print(w.proc.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=180, check=True
    )
    pid = int(out.stdout.strip())
    stopped = gone(pid, 30)
    if not stopped:  # do not leave it running for the next test
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    assert stopped, f"bench worker {pid} outlived its parent"

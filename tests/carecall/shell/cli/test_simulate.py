"""``carecall simulate --devices``: both modes, the JSON report, loopback only."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.carecall.shell.conftest import PLATFORM


@pytest.mark.slow
async def test_cli_simulate_devices_runs_both_modes_and_reports_json(
    platform: dict[str, Any], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CARECALL_DATABASE_URL": platform["url"],
        "CARECALL_LOG_LEVEL": "WARNING",
    }
    env.pop("CARECALL_MQTT_URL", None)
    url = f"mqtt://{PLATFORM[0]}:{PLATFORM[1]}@127.0.0.1:{platform['port']}"
    args = [
        *("-m", "carecall.shell.cli", "simulate", "--devices", "600", "--max-connections", "6"),
        *("--scenario", "alarm_storm", "--duration", "4", "--speed", "1", "--mqtt-url", url),
        *("--fleet-prefix", "cli", "--fleet-secrets", str(tmp_path / "cli.json")),
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads(out)
    assert report["mode"] == "mixed" and report["connections_held"] == 6
    assert report["load_mode_devices"] == 594 and report["scenario"] == "alarm_storm"
    assert report["setup"]["created"] == 600 and report["setup"]["keyed"] == 6
    assert report["open_files"]["soft_after"] >= report["open_files"]["soft_before"]
    # alarm_storm starts its 5,000 events 10 s in: a 4 s run stops before, by itself
    assert report["stopped_by"] == "duration" and report["messages"] > 0
    text = err.decode()
    assert "600 devices" in text and "load mode" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("t=")]
    assert len(lines) >= 2 and all("/6 load 594 |" in ln for ln in lines), "plain lines off a terminal"


async def test_cli_refuses_a_remote_broker_not_given_explicitly(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CARECALL_MQTT_URL": "mqtt://192.0.2.10:1883",
        "CARECALL_DATABASE_URL": "sqlite:///x.db",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "carecall.shell.cli", "simulate", "--devices", "10", "--allow-remote"),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and b"loopback only" in err

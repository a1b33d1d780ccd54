"""``carecall bench --broker own`` (carecall/shell/bench_broker.py): a Mosquitto with the
settings CareCall deploys, started for the run and stopped after it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from carecall.shell.bench_broker import MACHINE_BROKER, bench_broker
from device_gateway.broker_config import DEPLOYED_SETTINGS
from tests.integration.own_mosquitto import find_mosquitto

pytestmark = pytest.mark.integration


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_an_own_broker_runs_with_the_deployed_settings_and_stops(tmp_path: Path) -> None:
    find_mosquitto()  # fails in CI, skips with a reason elsewhere, when there is none
    with bench_broker("own", tmp_path) as (host, port):
        assert (host, port) != MACHINE_BROKER
        assert _accepts(port)
        conf = (tmp_path / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
        assert "set_tcp_nodelay true" in DEPLOYED_SETTINGS
        assert all(line in conf for line in DEPLOYED_SETTINGS)
    assert not _accepts(port), "stopped with the run"


def test_the_machine_broker_is_used_as_is(tmp_path: Path) -> None:
    with bench_broker("machine", tmp_path) as broker:
        assert broker == MACHINE_BROKER
    assert not (tmp_path / "mosquitto.conf").exists()

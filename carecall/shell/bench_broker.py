"""The real target's broker: the machine's Mosquitto (127.0.0.1:1883, as configured by
whoever installed it) or, with ``carecall bench --broker own``, a Mosquitto the bench
starts with the settings CareCall deploys it with (device_gateway/broker_config.py,
``DEPLOYED_SETTINGS``): above all ``set_tcp_nodelay true``.

Why it matters: without it the broker's small writes wait for Nagle's algorithm. On
this machine the stock Mosquitto put ~23 ms into the median alarm ack (`--quick`, split
lanes: p50 29 ms against 5.3 ms with no-delay, the gateway's own share 3–6 ms in both), a
delay of the broker's configuration, not of CareCall. Anonymous access, as on the
machine's broker: the bench's clients are the same either way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from device_gateway.broker_config import DEPLOYED_SETTINGS
from simulators.loadgen import paho_client

__all__ = ["BROKERS", "MACHINE_BROKER", "bench_broker", "forget_sessions"]

MACHINE_BROKER = ("127.0.0.1", 1883)
BROKERS = ("machine", "own")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError("--broker own needs the mosquitto binary (apt-get install mosquitto)")
    return found


@contextlib.contextmanager
def bench_broker(kind: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """(host, port) of the broker to use; an own one is stopped (by its PID) on the way out."""
    if kind == "machine":
        yield MACHINE_BROKER
        return
    port = _free_port()
    data = workdir / "mosquitto-data"
    data.mkdir(exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                "allow_anonymous true",
                "persistence true",
                f"persistence_location {data}/",
                *DEPLOYED_SETTINGS,
                "",
            ]
        ),
        encoding="utf-8",
    )
    with (workdir / "mosquitto.log").open("ab") as log:
        proc = subprocess.Popen([_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bench's own Mosquitto did not start (see {workdir}/mosquitto.log)")
            time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def forget_sessions(broker: tuple[str, int], client_ids: list[str]) -> None:
    """Drop the persistent sessions our gateways left on a shared broker."""
    for cid in client_ids:
        with contextlib.suppress(Exception):
            c = paho_client(broker[0], broker[1], cid)
            c.disconnect()
            c.loop_stop()

"""A Mosquitto of a test's own, on a free port, that the test may restart (gracefully, as
an operator's ``systemctl restart`` does) without touching the machine's shared broker.

Anonymous and with persistence, like the machine's: a persistent session (the gateway's)
keeps the wills a graceful shutdown publishes and gets them after the restart.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port


def find_mosquitto() -> str:
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None,
    )
    if binary:
        return binary
    if os.environ.get("CI"):
        pytest.fail("mosquitto binary not found; CI must provide Mosquitto 2.0")
    pytest.skip("mosquitto binary not found (apt-get install mosquitto); CI=1 makes this a failure")


def _open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class OwnMosquitto:
    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary, self.port, self.workdir = binary, port, workdir
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {data}/\nmax_queued_messages 100000\n",
            encoding="utf-8",
        )
        if os.geteuid() == 0:  # mosquitto started as root drops to its own user
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam("mosquitto")
                for path in (workdir, data, self.conf):
                    os.chown(path, user.pw_uid, user.pw_gid)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while not _open(self.port):
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"mosquitto did not listen on {self.port}:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Mosquitto publishes every connected client's will, saves, and exits."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, pause_s: float = 0.5) -> None:
        self.stop()
        time.sleep(pause_s)
        self.start()


@contextlib.contextmanager
def own_mosquitto() -> Iterator[OwnMosquitto]:
    binary = find_mosquitto()
    # not under pytest's tmp tree: its 0700 parents would lock out the mosquitto user
    workdir = Path(tempfile.mkdtemp(prefix="carecall-own-mosquitto-"))
    broker = OwnMosquitto(binary, free_port(), workdir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

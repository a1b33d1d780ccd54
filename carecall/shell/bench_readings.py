"""The readings behind the alarm path, sent by a process of their own (issue 15).

The alarm path measures event → ``received`` ack with thousands of readings a second
behind the alarms. Sent from the bench process, those readings cost the load generator
a whole core of Python (JSON, paho's publish and PUBACK handling, under one GIL): a
py-spy profile of the bench at 100 alarms/s + 2,300 readings/s (2026-12-06) showed the
readings' sender and the ack reader's thread each holding about half of it, so the
alarms' sends and the acks' reading waited for the GIL, and the figure measured the load
generator's queue, not the platform. Real devices are separate machines: one device's
readings never delay another's alarm inside the sender. The readings now come from a
child process, on a connection of their own, for a bounded time; the alarms and their
acks stay in the bench process.

That child sent through paho, at 32–48 % of a core during the quiet phase (2026-12-07),
on the cores the platform was queueing for; it now writes the same packets itself
(simulators/readings_pub.py: the same payloads, QoS 1, PUBACKs counted).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

from carecall.shell.bench_targets import Target
from simulators.readings_pub import ReadingsPublisher, run_paced

# the child leaves by itself this long after its sending time, whatever happens
_GRACE_S = 5.0


def _readings_main(
    host: str,
    port: int,
    creds: tuple[str | None, str | None],
    client_id: str,
    devices: Sequence[str],
    per_s: float,
    duration_s: float,
    ready: Any,
    sent: Any,
    cpu: Any,
) -> None:
    pub = ReadingsPublisher(host, port, client_id=client_id, username=creds[0], password=creds[1])
    pub.connect()
    ready.set()
    started = time.process_time()  # the sending's CPU, not the child's start-up (imports)
    try:
        run_paced(pub, devices=devices, per_s=per_s, duration_s=duration_s)
    finally:
        pub.close()
        sent.value = pub.sent
        cpu.value = time.process_time() - started


def readings_creds(t: Target) -> tuple[str | None, str | None]:
    """Who sends the readings: on a broker that checks device keys (embedded) a device
    login must use its own id as client id, and the bench's one loadgen device is already
    connected, so the platform account sends them; on the open test broker, nobody."""
    return t.observer_creds if t.loadgen_creds[0] else (None, None)


@contextlib.contextmanager
def readings_behind(
    t: Target, devices: Sequence[str], per_s: float, duration_s: float
) -> Iterator[dict[str, float]]:
    """``per_s`` readings a second from ``devices`` for ``duration_s`` (plus a second), from
    a child process; it is connected when the block starts and stopped (terminate, then
    kill) when the block ends. The dict yielded gets ``sent`` (readings sent) and
    ``cpu_s`` (the sender's CPU seconds: it shares the platform's cores) at the end."""
    out: dict[str, float] = {"sent": 0, "cpu_s": 0.0}
    if per_s <= 0:
        yield out
        return
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    sent = ctx.Value("q", 0)
    cpu = ctx.Value("d", 0.0)
    proc = ctx.Process(
        target=_readings_main,
        args=(
            t.host,
            t.port,
            readings_creds(t),
            f"bench-readings-{secrets.token_hex(3)}",
            list(devices),
            per_s,
            duration_s + 1.0,
            ready,
            sent,
            cpu,
        ),
        daemon=True,
        name="bench-readings",
    )
    proc.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the readings sender did not connect within 30 s")
        yield out
    finally:
        proc.join(_GRACE_S if proc.is_alive() else 0)
        out["sent"] = int(sent.value)
        out["cpu_s"] = round(float(cpu.value), 2)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)

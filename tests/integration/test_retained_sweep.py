"""Retained messages of a simulated run are taken off the machine's Mosquitto.

A harness that plays devices there (``carecall bench --target real``, load mode, these
tests) leaves retained ``status`` and ``config`` messages that the broker keeps for good;
every gateway subscribing later was replayed thousands of them, and
``test_a_will_fired_while_no_gateway_was_connected_is_taken_on_reconnect`` missed its
15 s. Checked here by a subscriber of its own on the topic filters, not by the sweep's
own finder: what is left is what a gateway would be replayed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import aiomqtt
import pytest

from simulators.device import DeviceSpec
from simulators.loadgen import ROOT, LoadGenerator, paho_client
from simulators.loadmode import LoadRun
from simulators.retained import clear_topics, retained_topics, sweep
from simulators.scenario import Scenario

pytestmark = pytest.mark.integration

# More than Mosquitto's default queue of 1,000 QoS 1 messages per client: a finder that
# subscribed at QoS 1 would be replayed only part of them.
DEVICES = 1_500


async def retained_on_broker(host: str, port: int, prefix: str, quiet_s: float = 2.0) -> set[str]:
    """Topics under ``prefix…`` devices holding a retained message: what a subscriber to
    the status and config filters is replayed, read until nothing new came for ``quiet_s``."""
    found: set[str] = set()
    async with aiomqtt.Client(host, port, identifier=f"rs-check-{uuid.uuid4().hex[:6]}") as c:
        await c.subscribe(f"{ROOT}/+/status", qos=0)
        await c.subscribe(f"{ROOT}/+/config", qos=0)
        while True:
            try:
                m = await asyncio.wait_for(anext(c.messages), quiet_s)
            except TimeoutError:
                return found
            if m.retain and m.payload and m.topic.value.split("/")[3].startswith(prefix):
                found.add(m.topic.value)


def publish_retained(host: str, port: int, topics: list[str]) -> None:
    c = paho_client(host, port, f"rs-put-{uuid.uuid4().hex[:6]}", max_inflight=1000)
    try:
        infos = [c.publish(t, json.dumps({"state": "online"}).encode(), qos=1, retain=True) for t in topics]
        for info in infos:
            info.wait_for_publish(20)
    finally:
        c.disconnect()
        c.loop_stop()


async def test_the_sweep_clears_every_retained_message_of_the_run_and_nothing_else(
    mosquitto: tuple[str, int],
) -> None:
    host, port = mosquitto
    run = f"rs{uuid.uuid4().hex[:6]}"
    ours = [f"{run}-d{i:06d}" for i in range(DEVICES)]
    foreign = f"{run}-x"  # another run's device on the shared broker
    put = retained_topics(ours) + retained_topics([foreign])[1:]  # the foreign status only
    try:
        await asyncio.to_thread(publish_retained, host, port, put)
        before = await retained_on_broker(host, port, run)
        assert before == set(put), "the check sees every retained message (else it proves nothing)"

        t0 = time.monotonic()
        report = await asyncio.to_thread(sweep, host, port, ours, timeout_s=30)
        took = time.monotonic() - t0
        print(f"\n{report.line()} (wall {took:.2f} s)")
        assert report.complete
        assert (report.devices, report.found, report.cleared, report.unacked) == (
            DEVICES,
            2 * DEVICES,
            2 * DEVICES,
            0,
        )

        after = await retained_on_broker(host, port, run)
        assert after == {f"{ROOT}/{foreign}/status"}, f"left: {sorted(after)[:5]}"

        again = await asyncio.to_thread(sweep, host, port, ours, timeout_s=30)
        assert (again.found, again.cleared) == (0, 0), "nothing left: nothing published"
    finally:
        await asyncio.to_thread(clear_topics, host, port, retained_topics([*ours, foreign]))


async def test_load_mode_leaves_no_retained_status_of_its_power_cut(mosquitto: tuple[str, int]) -> None:
    """Load mode plays a power cut with retained statuses (online, the will's offline,
    online) and clears them at the end. It used to publish the clearing messages and
    disconnect at once: with more devices than the connection's in-flight window, the
    rest were dropped with the connection (603 of 800 left on this machine)."""
    host, port = mosquitto
    run = f"rl{uuid.uuid4().hex[:6]}"
    n = 1_000
    specs = [DeviceSpec(f"{run}-d{i:05d}", "hub", f"{run}-h{i:05d}", "", 3600) for i in range(n)]
    scenario = Scenario.model_validate(
        {"day_night_rhythm": False, "power_cut": {"at_s": 0.2, "duration_s": 0.5, "devices": n}}
    )
    gen = LoadGenerator(host, port, client_id=f"{run}-lg", max_inflight=100)
    try:
        gen.start(track_acks=False)
        load = LoadRun(gen, specs, scenario, speed=1.0, duration_s=1.5, max_messages=100_000, drain_s=0.2)
        await asyncio.to_thread(load.run)
        gen.close()
        assert load.offline_max == n and gen.stats.status_sent == 3 * n and load.status_cleared == n
        left = await retained_on_broker(host, port, run)
        assert not left, f"{len(left)} retained statuses of the run left, e.g. {sorted(left)[:3]}"
    finally:
        with contextlib.suppress(Exception):
            gen.close()
        await asyncio.to_thread(clear_topics, host, port, retained_topics(s.device_id for s in specs))


async def test_the_real_bench_clean_up_clears_what_its_run_left(mosquitto: tuple[str, int]) -> None:
    """What ``carecall bench --target real`` runs in its clean-up, on a run's fleets: a
    gateway's retained config and a status left under the run's ids are gone afterwards,
    another run's are not, and the progress lines say how many."""
    from carecall.shell.bench_retained import clear_run_retained, run_device_ids
    from carecall.shell.fleet_registry import Fleet

    host, port = mosquitto
    run = f"rb{uuid.uuid4().hex[:6]}"

    def fleet(prefix: str, n: int) -> Fleet:
        devices = [f"{prefix}-d{i:06d}" for i in range(n)]
        return Fleet(prefix, [], devices, f"{prefix}-carecall-loadgen", "", {})

    main, flood = fleet(run, 200), fleet(f"{run}f", 20)
    ids = run_device_ids(main, {"flood": flood})
    left_by_run = retained_topics(main.devices[:50] + flood.devices[:5] + [main.loadgen_id])
    other = retained_topics([f"{run}x-d000000"])
    said: list[str] = []
    try:
        await asyncio.to_thread(publish_retained, host, port, left_by_run + other)
        report = await asyncio.to_thread(clear_run_retained, host, port, ids, said.append)
        print("\n" + "\n".join(said))
        assert report is not None and report.found == report.cleared == len(left_by_run) == 112
        assert said[-1].startswith(
            f"retained messages of the run's {len(ids)} devices: 112 found, 112 cleared"
        )
        assert await retained_on_broker(host, port, run) == set(other)
    finally:
        await asyncio.to_thread(clear_topics, host, port, left_by_run + other)

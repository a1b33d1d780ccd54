"""The fault stories of issue 6 (power cut, flapping device, device that resends forever),
run at high speed against an in-process broker and the fake platform."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import aiomqtt
import pytest

from carecall.core.clock import Clock
from simulators.runner import SimStats, run_simulation
from simulators.scenario import Scenario, ScenarioError, load_scenario
from tests.simulators.conftest import FakePlatform, until
from tests.simulators.test_runner import county

Factory = Callable[..., Awaitable[FakePlatform]]


class StatusWatcher:
    """Counts ``offline`` status messages (will messages) per device, live only."""

    def __init__(self) -> None:
        self.offline: Counter[str] = Counter()
        self.ready = asyncio.Event()

    async def run(self, port: int) -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="status-watcher") as client:
            await client.subscribe("carecall/v1/devices/+/status", qos=1)
            self.ready.set()
            async for message in client.messages:
                if not message.topic.matches("carecall/v1/devices/+/status") or message.retain:
                    continue
                assert isinstance(message.payload, bytes)
                if message.payload and json.loads(message.payload).get("state") == "offline":
                    self.offline[str(message.topic).split("/")[3]] += 1


@pytest.fixture
async def watcher(broker_port: int) -> AsyncIterator[StatusWatcher]:
    w = StatusWatcher()
    task = asyncio.create_task(w.run(broker_port))
    await asyncio.wait_for(w.ready.wait(), 5)
    yield w
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
        await task


def test_new_fields_are_optional_and_checked() -> None:
    plain = Scenario()
    assert plain.power_cut is None and plain.flapping == [] and plain.resend_forever == []
    with pytest.raises(ValueError, match="down_s"):
        Scenario.model_validate({"flapping": [{"period_s": 10, "down_s": 10}]})
    with pytest.raises(ValueError):
        Scenario.model_validate({"resend_forever": [{"type": "nonsense"}]})
    with pytest.raises(ValueError):
        Scenario.model_validate({"power_cut": {"kinds": ["toaster"]}})
    with pytest.raises(ValueError):
        Scenario.model_validate({"power_cut": {"devices": 0}})


@pytest.mark.parametrize("name", ["power_cut", "flapping", "resend_forever"])
def test_shipped_fault_scenarios_load_and_are_bounded(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name and scenario.duration_s is not None
    try:
        load_scenario(name)
    except ScenarioError:  # pragma: no cover - a shipped file must always load
        pytest.fail(name)


async def test_power_cut_takes_every_device_down_at_once_and_brings_them_back(
    broker_port: int, platform_factory: Factory, watcher: StatusWatcher
) -> None:
    """The shipped power cut (2,000 devices) on a 20-device county: all 20 go, all 20 return."""
    await platform_factory()
    scenario = load_scenario("power_cut")
    assert scenario.power_cut is not None and scenario.power_cut.devices == 2000
    devices = county(4)
    progress: list[SimStats] = []
    report = await run_simulation(
        host="127.0.0.1",
        port=broker_port,
        devices=devices,
        scenario=scenario,
        # The cut is 300-1500 s; the run lasts the file's own 2,400 s (12 s real at x200).
        # x200 keeps the cut 6 s long in real time: on a busy CI machine the in-process broker
        # once took over 3 s to notice some drops, the devices came back first, and (correctly,
        # by MQTT) no will fired for them. The 4.5 s after the cut leave room to reconnect: a
        # run that stopped 0.5 s after power returned once ended with none of 20 back in CI.
        # Stagger connects: amqtt 0.12 can crash a CONNECT racing another client's SUBSCRIBE.
        clock=Clock(speed=200),
        duration_s=2400,
        connect_stagger_s=0.02,
        on_progress=progress.append,
        progress_interval_s=0.05,
        seed=3,
        drain_s=2.0,
    )
    n = len(devices)
    assert report.connected == n
    assert report.drops == n  # every device dropped exactly once
    assert any(s.silent == n and s.online == 0 for s in progress)  # all down together
    assert report.online_at_end == n  # and all back
    # Abrupt drops: the broker fired every device's will (bounded wait for the last ones).
    deadline = asyncio.get_running_loop().time() + 5.0
    while len(watcher.offline) < n and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert set(watcher.offline) == {d.device_id for d in devices}
    assert report.pending == 0 and report.events_raised == report.events_received
    assert report.reconnects == 0  # coming back from a cut is not counted as a broken link


async def test_power_cut_takes_only_the_number_asked_for(broker_port: int, platform_factory: Factory) -> None:
    await platform_factory()
    scenario = Scenario.model_validate(
        {"name": "small_cut", "power_cut": {"at_s": 600, "duration_s": 1200, "devices": 7}}
    )
    progress: list[SimStats] = []
    # At x1000 the 20 devices' staggered starts take 400 simulated seconds on an idle
    # machine: the cut comes after them, lasts 1.2 real seconds (progress is sampled every
    # 0.05 s), and the end leaves 3.7 real seconds to come back. (CI's full suite, on a
    # busy machine, once ended a run cut at 200 s and ended at 1,000 s with 19 connected
    # and 10 online, and once sampled no progress during a cut of 0.3 real seconds. With
    # 1.7 s left the full suite on a slow day ended with 13 online, none of the 7 back, and
    # once sampled no silent device at all; it passed alone and under a CPU hog. The cause,
    # measured: a full garbage collection of the suite's 1.8 million objects stopping the
    # loop for 2-3 s; tests/conftest.py now collects and freezes between tests.)
    report = await run_simulation(
        host="127.0.0.1",
        port=broker_port,
        devices=county(4),
        scenario=scenario,
        clock=Clock(speed=1000),
        duration_s=5500,
        on_progress=progress.append,
        progress_interval_s=0.05,
        drain_s=0.5,
        connect_stagger_s=0.02,
    )
    assert report.drops == 7
    assert max(s.silent for s in progress) == 7
    assert report.online_at_end == 20


async def test_flapping_device_drops_and_returns_on_its_cadence(
    broker_port: int, platform_factory: Factory, watcher: StatusWatcher
) -> None:
    platform = await platform_factory()
    shipped = load_scenario("flapping")
    [flap] = shipped.flapping
    assert (flap.period_s, flap.down_s, flap.max_drops) == (180, 30, 20)
    # The shipped cadence, with each drop 120 s long and 6 of them: at x200 a drop lasts
    # 0.6 s of real time. The file's 30 s at x1000 (30 ms) let a busy CI machine's broker
    # notice one drop only after the hub was back, and then (rightly, by MQTT) no will fired.
    flap = flap.model_copy(update={"down_s": 120, "max_drops": 6})
    scenario = shipped.model_copy(update={"flapping": [flap]})
    devices = county(2)
    report = await run_simulation(
        host="127.0.0.1",
        port=broker_port,
        devices=devices,
        scenario=scenario,
        clock=Clock(speed=200),  # 60 + 6 x 180 simulated seconds in 6 s
        duration_s=60 + 6 * 180 + 60,
        seed=5,
        drain_s=1.0,
        connect_stagger_s=0.02,
    )
    hub = sorted(d.device_id for d in devices if d.kind == "hub")[0]
    assert report.drops == flap.max_drops == 6  # bounded by max_drops
    # the last wills may still be on their way on a busy machine: wait for them, bounded
    deadline = asyncio.get_running_loop().time() + 5.0
    while watcher.offline.get(hub, 0) < 6 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # and no extra one after the sixth
    assert set(watcher.offline) == {hub}  # only the flapping hub lost its link...
    assert watcher.offline[hub] == 6  # ...and the broker saw every drop
    assert report.online_at_end == len(devices)
    # the SOS it raised while flapping arrived exactly once
    assert report.events_raised == report.events_received == 1 and platform.types["sos"] == 1


async def test_resend_forever_device_keeps_sending_the_same_event(
    broker_port: int, platform_factory: Factory
) -> None:
    platform = await platform_factory()
    scenario = load_scenario("resend_forever")
    [item] = scenario.resend_forever
    report = await run_simulation(
        host="127.0.0.1",
        port=broker_port,
        devices=county(2),
        scenario=scenario,
        clock=Clock(speed=1000),  # one simulated hour in 3.6 s: a copy every 30 ms
        duration_s=None,
        seed=9,
        drain_s=0.2,
        connect_stagger_s=0.02,
    )
    # The broker and the fake platform share this event loop with the devices: on a busy
    # machine the platform was once 40 copies (1.2 real seconds) behind when the run ended
    # (CI's full suite). Every copy sent must still reach it (but the last two, which may
    # have been in flight when the device stopped): wait for them, bounded.
    at_end = sum(platform.copies.values())
    await until(lambda: sum(platform.copies.values()) >= report.sends - 2, within_s=10.0)
    [(_key, copies)] = platform.copies.items()  # one event, many copies of it
    assert platform.types == Counter({"sos": 1})
    assert report.events_raised == 1 and report.events_received == 1 and report.pending == 0
    assert copies <= report.sends <= copies + 2  # the last copy may be in flight at the end
    expected = (3600 - item.at_s) / 30
    assert 0.5 * expected <= copies <= min(item.max_sends, expected + 2)
    # it heard (and ignored) an ack for nearly every copy the platform had taken by the
    # end; a few may be in flight at the end
    assert at_end - 5 <= report.acks_ignored <= at_end


async def test_resend_forever_is_bounded_by_max_sends(broker_port: int, platform_factory: Factory) -> None:
    platform = await platform_factory()
    scenario = Scenario.model_validate(
        {"resend_forever": [{"kind": "watch", "at_s": 1, "type": "fall", "interval_s": 5, "max_sends": 6}]}
    )
    report = await run_simulation(
        host="127.0.0.1",
        port=broker_port,
        devices=county(1),
        scenario=scenario,
        # x100: 2 s real, so the six copies (26 s of device time) are all out long before the
        # end even on a busy machine (x500 once stored only 3 in a full run)
        clock=Clock(speed=100),
        duration_s=200,  # room for 40 copies, but 6 is the cap
        drain_s=0.2,
        connect_stagger_s=0.02,
    )
    assert list(platform.copies.values()) == [6]
    assert report.sends == 6 and report.resends == 5 and report.events_received == 1

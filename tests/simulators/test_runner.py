"""A whole (small) county run at high speed against a real broker and a fake platform."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from carecall.core.clock import Clock
from device_gateway.kinds import DEFAULT_HEARTBEAT_S, DeviceKind
from device_gateway.protocol import AckState
from simulators.device import DeviceSpec, SimulatedDevice
from simulators.runner import SimStats, _plan, check_host, percentile, run_simulation
from simulators.scenario import Scenario, load_scenario
from tests.simulators.conftest import FakePlatform

Factory = Callable[..., Awaitable[FakePlatform]]

KINDS = [DeviceKind.hub, DeviceKind.button, DeviceKind.mattress, DeviceKind.watch, DeviceKind.radar]


def county(homes: int) -> list[DeviceSpec]:
    return [
        DeviceSpec(
            device_id=f"h{h:03d}-{kind.value}",
            kind=kind.value,
            home_id=f"h{h:03d}",
            secret="s",
            heartbeat_s=DEFAULT_HEARTBEAT_S[kind],
        )
        for h in range(homes)
        for kind in KINDS
    ]


BUSY = Scenario.model_validate(
    {
        "name": "busy",
        "rates": {
            "button": {"sos": 150, "test": 20},
            "mattress": {"bed_exit": 100, "vital_alert": 20},
            "watch": {"fall": 100},
            "radar": {"fall": 50, "inactivity": 50},
        },
        "offline": {"probability_per_day": 0.9999, "min_s": 60, "max_s": 120},
        "burst": {"start_s": 100, "duration_s": 200, "total": 30, "types": {"sos": 1, "smoke": 1}},
        "scripted": [{"at_s": 50, "type": "low_battery", "kind": "button", "device_index": 2}],
    }
)


async def test_high_speed_run_raises_events_and_the_counts_add_up(
    broker_port: int, platform_factory: Factory
) -> None:
    platform = await platform_factory(then=(AckState.assigned,))
    progress: list[SimStats] = []
    report = await run_simulation(
        host="127.0.0.1",
        port=broker_port,
        devices=county(6),
        scenario=BUSY,
        clock=Clock(speed=600),
        duration_s=600,  # ten simulated minutes, one real second
        on_progress=progress.append,
        progress_interval_s=0.2,
        seed=7,
        drain_s=2.0,
    )
    assert report.devices == 30 and report.connected == 30
    assert report.events_raised >= 30  # the burst alone is 30
    assert report.events_by_type.get("smoke", 0) >= 1 and report.events_by_type["low_battery"] == 1
    assert report.events_raised == report.events_received + report.events_rejected + report.pending
    assert sum(report.events_by_type.values()) == report.events_raised
    # sends - resends = events published at least once
    assert report.events_received <= report.sends - report.resends <= report.events_raised
    # Every event the platform saw was acked, except those whose ack was still on its way
    # when the run ended (on a loaded machine the 2 s drain can end first): they are
    # among the pending, as are the ones a silent device still holds.
    seen = sum(platform.types.values())
    assert report.events_received <= seen <= report.events_received + report.pending
    assert report.ack_latency.count == report.events_received
    lat = report.ack_latency
    assert lat.p50_ms is not None and lat.p90_ms is not None and lat.p99_ms is not None
    assert lat.max_ms is not None and lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms
    # "assigned" trails "received": the last one may still be in flight when the run ends
    assert 0 < report.later_acks.get("assigned", 0) <= report.events_received
    assert report.telemetry_sent > 0
    assert report.drops >= 1
    assert report.rejected_reasons == {}
    assert len(report.pending_events) == report.pending
    assert 500 <= report.simulated_s <= 800
    assert progress and progress[-1].events_raised == report.events_raised


async def test_stop_event_ends_an_open_ended_run(broker_port: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    report = await run_simulation(
        host="127.0.0.1",
        port=broker_port,
        devices=county(2),
        scenario=load_scenario("quiet"),
        clock=Clock(speed=600),
        duration_s=None,
        stop=stop,
        drain_s=0.1,
    )
    assert report.scenario == "quiet"
    assert report.events_raised == 0 and report.connected == 10
    assert report.real_s < 5


@pytest.mark.parametrize("host", ["10.0.0.5", "192.168.1.20", "broker.example.com", "0.0.0.0"])
async def test_refuses_a_non_loopback_host(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        await run_simulation(
            host=host,
            port=1883,
            devices=county(1),
            scenario=Scenario(),
            clock=Clock(speed=600),
            duration_s=1,
        )
    check_host(host, allow_remote=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_are_fine(host: str) -> None:
    check_host(host)


async def test_planned_events_are_reproducible_per_seed() -> None:
    storm = load_scenario("storm")
    sims = [
        SimulatedDevice(spec, host="127.0.0.1", port=1, clock=Clock(600), scenario=storm)
        for spec in county(10)
    ]
    first = _plan(storm, sims, random.Random("1:plan"))
    again = _plan(storm, sims, random.Random("1:plan"))
    other = _plan(storm, sims, random.Random("2:plan"))
    assert first == again != other
    assert storm.burst is not None and len(first) == storm.burst.total
    # a fall comes from a radar or a watch, never from a mattress
    kinds = {sims[p.device].spec.kind for p in first if p.type == "fall"}
    assert kinds <= {"radar", "watch"}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([3.0], 0.9) == 3

"""County scale: the split between per-device connections and load mode."""

from __future__ import annotations

from simulators.fleet import FD_RESERVE, plan_modes, split_scenario
from simulators.scenario import load_scenario


def test_split_shares_counted_stories_and_gives_single_devices_to_connections() -> None:
    storm = load_scenario("alarm_storm")
    conn, load = split_scenario(storm, 1000, 99_000)
    assert conn.burst is not None and load.burst is not None
    assert conn.burst.total + load.burst.total == 5000 and conn.burst.total == 50
    conn, load = split_scenario(storm, 52, 0)  # a small county: the whole storm, whatever its size
    assert conn.burst is not None and conn.burst.total == 5000
    cut = load_scenario("power_cut")
    conn, load = split_scenario(cut, 500, 99_500)
    assert conn.power_cut is not None and load.power_cut is not None
    assert conn.power_cut.devices + load.power_cut.devices == 2000
    forever = load_scenario("resend_forever")
    conn, load = split_scenario(forever, 10, 1000)
    assert len(conn.resend_forever) == 1 and not load.resend_forever
    conn, load = split_scenario(forever, 0, 1000)
    assert len(load.resend_forever) == 1


def test_plan_modes_keeps_a_reserve_and_honours_the_cap() -> None:
    assert plan_modes(100_000, 20_000) == (20_000 - FD_RESERVE, 80_000 + FD_RESERVE)
    assert plan_modes(100_000, 20_000, max_connections=500) == (500, 99_500)
    assert plan_modes(10, 20_000) == (10, 0)
    assert plan_modes(10, 100) == (0, 10)

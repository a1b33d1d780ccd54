"""Load mode's plan: what the shipped scenarios make the load part's devices do."""

from __future__ import annotations

from collections import Counter

from simulators.device import DeviceSpec
from simulators.loadmode import plan_load
from simulators.scenario import load_scenario


def specs(
    n: int, kinds: tuple[str, ...] = ("hub", "button", "mattress", "radar", "watch")
) -> list[DeviceSpec]:
    return [DeviceSpec(f"d{i:05d}", kinds[i % len(kinds)], f"h{i:05d}", "", 60) for i in range(n)]


def test_shipped_power_cut_takes_2000_devices_offline_at_once_and_brings_them_back() -> None:
    scen = load_scenario("power_cut")
    assert scen.power_cut is not None and scen.power_cut.devices == 2000
    acts = plan_load(scen, specs(10_000), scen.duration_s or 0)
    drops = Counter(a.at_s for a in acts if a.what == "drop")
    backs = Counter(a.at_s for a in acts if a.what == "back")
    cut = scen.power_cut
    assert drops[cut.at_s] == 2000, "all 2,000 at the same moment"
    assert backs[cut.at_s + cut.duration_s] == 2000
    dropped = {a.device for a in acts if a.what == "drop"}
    assert dropped == {a.device for a in acts if a.what == "back"}


def test_shipped_alarm_storm_is_5000_events_in_10_seconds() -> None:
    scen = load_scenario("alarm_storm")
    county = specs(20_000)
    acts = [a for a in plan_load(scen, county, scen.duration_s or 0) if a.what == "event"]
    assert len(acts) == 5000
    assert scen.burst is not None
    lo, hi = scen.burst.start_s, scen.burst.start_s + scen.burst.duration_s
    assert hi - lo == 10 and all(lo <= a.at_s <= hi for a in acts)
    # senders are plausible: smoke alarms from smoke detectors or hubs, never from a watch
    kinds = {county[a.device].kind for a in acts if a.type == "smoke"}
    assert kinds <= {"smoke", "hub"}


def test_flapping_and_resend_forever_play_in_load_mode_when_no_device_has_a_connection() -> None:
    flap = load_scenario("flapping")
    acts = plan_load(flap, specs(50), flap.duration_s or 0)
    drops = [a for a in acts if a.what == "drop"]
    assert len(drops) == 20 and len({a.device for a in drops}) == 1
    assert specs(50)[drops[0].device].kind == "hub"
    forever = load_scenario("resend_forever")
    acts = plan_load(forever, specs(50), forever.duration_s or 0)
    (item,) = [a for a in acts if a.what == "forever"]
    assert item.max_sends == 200 and item.interval_s == 30

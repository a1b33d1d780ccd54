"""Which retained topics a sweep clears for which device ids (simulators/retained.py, the
pure part; tests/integration/test_retained_sweep.py runs it against the real Mosquitto)."""

from __future__ import annotations

import pytest

from simulators.retained import SweepReport, retained_filters, retained_topics, to_clear

ROOT = "carecall/v1/devices"


def test_the_retained_channels_are_status_and_config() -> None:
    assert retained_filters() == [f"{ROOT}/+/status", f"{ROOT}/+/config"]
    assert retained_topics(["b", "a", "a"]) == [
        f"{ROOT}/a/config",
        f"{ROOT}/a/status",
        f"{ROOT}/b/config",
        f"{ROOT}/b/status",
    ]


def test_a_bad_device_id_is_refused_not_turned_into_a_wildcard() -> None:
    with pytest.raises(ValueError):
        retained_topics(["bench-+"])
    with pytest.raises(ValueError):
        retained_topics(["a/b"])


def test_only_the_given_devices_retained_topics_are_cleared() -> None:
    ours = {"bench1a2b-d000000", "bench1a2b-d000001", "bench1a2b-carecall-loadgen"}
    found = [
        f"{ROOT}/bench1a2b-d000000/status",
        f"{ROOT}/bench1a2b-d000000/config",
        f"{ROOT}/bench1a2b-d000001/status",
        f"{ROOT}/bench1a2b-d000001/status",  # seen twice: cleared once
        # another run's or a real device's on the shared broker: never touched
        f"{ROOT}/bench9f9f-d000000/status",
        f"{ROOT}/bench1a2b-d0000001/status",  # a longer id sharing our prefix
        f"{ROOT}/wl12ab34-hub/config",
        # ours, but not on a retained channel of the protocol, or not a protocol topic
        f"{ROOT}/bench1a2b-d000000/telemetry",
        f"{ROOT}/bench1a2b-d000000/ack",
        f"{ROOT}/bench1a2b-d000000/status/extra",
        "carecall/bench/ab12cd/baseline",
        "other/v1/devices/bench1a2b-d000000/status",
    ]
    assert to_clear(ours, found) == [
        f"{ROOT}/bench1a2b-d000000/config",
        f"{ROOT}/bench1a2b-d000000/status",
        f"{ROOT}/bench1a2b-d000001/status",
    ]
    assert to_clear(list(ours), iter(found)) == to_clear(ours, found)  # any collection, any iterable
    assert to_clear(set(), found) == []
    assert to_clear(ours, []) == []


def test_the_report_line_says_what_was_found_and_cleared_and_what_was_not() -> None:
    ok = SweepReport(devices=4_444, found=3, cleared=3, unacked=0, complete=True, seconds=0.42)
    assert ok.line() == "retained messages of the run's 4,444 devices: 3 found, 3 cleared in 0.4 s"
    bad = SweepReport(devices=10, found=1_200, cleared=1_150, unacked=50, complete=False, seconds=30.0)
    assert "1,200 found, 1,150 cleared" in bad.line()
    assert "some may be left" in bad.line()
    assert "50 not acknowledged in time" in bad.line()

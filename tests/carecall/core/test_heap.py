"""The startup heap frozen out of the collector, and every collection timed (carecall/core/heap.py)."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from structlog.testing import capture_logs

from carecall.core import heap
from config.settings import load_settings


def test_a_pause_lands_in_the_first_bucket_that_holds_it() -> None:
    counts = heap.PauseCounts()
    for seconds in (0.0005, 0.001, 0.0011, 0.3, 7.0):
        counts.add(seconds)
    bounds = dict(zip((*heap.BUCKETS, float("inf")), counts.buckets, strict=True))
    assert bounds[0.001] == 2  # a bound holds the pauses equal to it
    assert bounds[0.005] == 1 and bounds[0.5] == 1 and bounds[float("inf")] == 1
    assert counts.count == 5
    assert counts.total_s == pytest.approx(7.3026)
    assert counts.longest_s == 7.0


def test_the_histogram_is_cumulative_per_generation_with_its_sum() -> None:
    pauses = heap.GcPauses()
    for generation, seconds in ((0, 0.002), (0, 0.02), (2, 0.3)):
        pauses.callback("start", {"generation": generation})
        pauses.generations[generation].add(seconds)  # as the stop callback would, with a known time
    registry = CollectorRegistry()
    registry.register(pauses)
    text = generate_latest(registry).decode()
    assert 'carecall_gc_pause_seconds_bucket{generation="0",le="0.001"} 0.0' in text
    assert 'carecall_gc_pause_seconds_bucket{generation="0",le="0.005"} 1.0' in text
    assert 'carecall_gc_pause_seconds_bucket{generation="0",le="0.025"} 2.0' in text
    assert 'carecall_gc_pause_seconds_bucket{generation="0",le="+Inf"} 2.0' in text
    assert 'carecall_gc_pause_seconds_count{generation="0"} 2.0' in text
    assert 'carecall_gc_pause_seconds_sum{generation="0"} 0.022' in text
    assert 'carecall_gc_pause_seconds_bucket{generation="2",le="0.25"} 0.0' in text
    assert 'carecall_gc_pause_seconds_bucket{generation="2",le="0.5"} 1.0' in text
    assert 'carecall_gc_pause_seconds_count{generation="1"} 0.0' in text


def test_watching_times_real_collections_once_however_often_it_is_asked() -> None:
    pauses = heap.watch()
    assert heap.watch() is pauses
    assert gc.callbacks.count(pauses.callback) == 1
    before = pauses.generations[2].count
    gc.collect()
    assert pauses.generations[2].count == before + 1
    assert pauses.generations[2].longest_s > 0


def test_settle_takes_what_lives_out_of_later_collections_and_says_so() -> None:
    held = [[i] for i in range(1000)]  # lists: always tracked by the collector
    assert any(o is held for o in gc.get_objects())
    with capture_logs() as logs:
        frozen = heap.settle("gateway-events")
    assert frozen >= 1000 and gc.get_freeze_count() >= 1000
    assert not any(o is held for o in gc.get_objects())  # frozen: no collection scans it
    [settled] = [e for e in logs if e["event"] == "process.heap_settled"]
    assert settled["role"] == "gateway-events" and settled["frozen_objects"] == frozen
    # reference counting still frees a frozen object the moment nothing uses it
    gone = gc.get_freeze_count()
    del held
    assert gc.get_freeze_count() <= gone - 1000


def test_settle_when_turned_off_freezes_nothing() -> None:
    before = gc.get_freeze_count()
    held = [{"n": 1}]
    with capture_logs() as logs:
        assert heap.settle("dispatcher", enabled=False) == 0
    assert gc.get_freeze_count() == before
    assert any(o is held for o in gc.get_objects())
    assert not [e for e in logs if e["event"] == "process.heap_settled"]


def test_the_setting_is_on_by_default_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().gc_freeze is True
    monkeypatch.setenv("CARECALL_GC_FREEZE", "false")
    assert load_settings().gc_freeze is False

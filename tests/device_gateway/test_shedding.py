"""Readings under overload (issue 15): merged per device and metric past the first bound,
dropped past the second, every one counted; under the bounds, nothing changes."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest

from device_gateway import protocol as p
from device_gateway.readings_queue import ShedCounts, readings_queue
from device_gateway.shedding import Admit, admit_reading, merge_readings

ROOT = p.TOPIC_PREFIX
MAX = 16 * 1024


@pytest.mark.parametrize(
    ("queued", "waiting", "expected"),
    [
        (0, False, Admit.queue),
        (9, True, Admit.queue),  # under the first bound: every reading in line
        (10, True, Admit.merge),
        (10, False, Admit.queue),
        (99, False, Admit.queue),
        (100, True, Admit.merge),  # past both: a device with one waiting still merges
        (100, False, Admit.drop),
        (5_000, False, Admit.drop),
    ],
)
def test_admit_reading(queued: int, waiting: bool, expected: Admit) -> None:
    assert admit_reading(queued, shed_above=10, drop_above=100, device_waiting=waiting) is expected


def test_a_merge_keeps_the_latest_value_of_every_metric_at_the_newer_time() -> None:
    older = b'{"ts":1700000000000,"metrics":{"hr":70,"battery_pct":55}}'
    newer = b'{"ts":1700000001000,"metrics":{"hr":72,"rr":15}}'
    merged = merge_readings(older, newer, MAX)
    assert merged is not None
    assert json.loads(merged) == {"ts": 1700000001000, "metrics": {"hr": 72, "battery_pct": 55, "rr": 15}}
    assert "ts" not in json.loads(merge_readings(older, b'{"metrics":{"hr":1}}', MAX) or b"{}")


@pytest.mark.parametrize(
    "odd",
    [
        b"{not json",
        b'{"metrics":{"hr":70},"extra":1}',
        b'{"metrics":{"nested":{"a":1}}}',
        b'{"metrics":{"hr":NaN}}',
    ],
)
def test_an_odd_reading_is_never_merged_the_full_parser_must_see_it(odd: bytes) -> None:
    ok = b'{"metrics":{"hr":70}}'
    assert merge_readings(odd, ok, MAX) is None
    assert merge_readings(ok, odd, MAX) is None


def test_a_merge_past_the_metric_or_size_limit_is_refused() -> None:
    a = json.dumps({"metrics": {f"a{i}": i for i in range(p.MAX_METRICS)}}).encode()
    b = json.dumps({"metrics": {"b": 1}}).encode()
    assert merge_readings(a, b, MAX) is None
    c = json.dumps({"metrics": {"x": "v" * 60}}).encode()
    assert merge_readings(c, b, len(c)) is None


def _reading(device: str, metrics: dict[str, object]) -> aiomqtt.Message:
    body = json.dumps({"metrics": metrics}).encode()
    return aiomqtt.Message(f"{ROOT}/{device}/telemetry", body, 0, False, 0, None)


def _drain(q: asyncio.Queue[aiomqtt.Message]) -> list[tuple[str, dict[str, object]]]:
    out = []
    while not q.empty():
        msg = q.get_nowait()
        out.append((msg.topic.value.split("/")[3], json.loads(msg.payload)["metrics"]))  # type: ignore[arg-type]
    return out


async def test_the_queue_keeps_every_reading_in_order_under_its_bound() -> None:
    counts = ShedCounts()
    q = readings_queue(shed_above=10, drop_above=20, max_bytes=MAX, counts=counts)()
    for i in range(10):
        q.put_nowait(_reading("d1", {"hr": i}))
    assert [m["hr"] for _, m in _drain(q)] == list(range(10))
    assert (counts.merged, counts.dropped, counts.queued) == (0, 0, 0)


async def test_past_its_bound_the_queue_merges_per_device_and_drops_counting_each() -> None:
    counts = ShedCounts()
    q = readings_queue(shed_above=3, drop_above=4, max_bytes=MAX, counts=counts)()
    q.put_nowait(_reading("a", {"hr": 70, "battery_pct": 50}))
    q.put_nowait(_reading("b", {"hr": 80}))
    q.put_nowait(_reading("c", {"hr": 90}))
    q.put_nowait(_reading("a", {"hr": 71}))  # 3 queued: merged into a's waiting reading
    q.put_nowait(_reading("d", {"hr": 60}))  # nothing of d's waiting, under drop_above: queued
    q.put_nowait(_reading("e", {"hr": 61}))  # 4 queued, nothing of e's waiting: dropped
    q.put_nowait(_reading("d", {"rr": 12}))  # merged into d's, even past drop_above
    assert (counts.merged, counts.dropped, counts.queued) == (2, 1, 4)
    assert _drain(q) == [
        ("a", {"hr": 71, "battery_pct": 50}),  # a kept its place in line, with its latest values
        ("b", {"hr": 80}),
        ("c", {"hr": 90}),
        ("d", {"hr": 60, "rr": 12}),
    ]
    assert counts.queued == 0
    # once taken, a device's next reading queues again rather than merging into the past
    q.put_nowait(_reading("a", {"hr": 72}))
    assert _drain(q) == [("a", {"hr": 72})]


async def test_an_odd_reading_past_the_bound_is_queued_for_the_parser_not_merged() -> None:
    counts = ShedCounts()
    q = readings_queue(shed_above=1, drop_above=10, max_bytes=MAX, counts=counts)()
    q.put_nowait(_reading("a", {"hr": 70}))
    bad = aiomqtt.Message(f"{ROOT}/a/telemetry", b"{not json", 0, False, 0, None)
    q.put_nowait(bad)
    assert q.qsize() == 2 and counts.merged == 0
    q.get_nowait()
    assert q.get_nowait().payload == b"{not json"


async def test_only_readings_are_merged_or_dropped_other_channels_queue_as_they_come() -> None:
    counts = ShedCounts()
    q = readings_queue(shed_above=1, drop_above=1, max_bytes=MAX, counts=counts)()
    q.put_nowait(_reading("a", {"hr": 70}))
    # the copies of events (and junk on the events topic) a five-level filter also brings
    for body in (b'{"metrics":{"hr":1}}', b"{not json", b'{"id":"e1","type":"sos"}'):
        q.put_nowait(aiomqtt.Message(f"{ROOT}/a/events", body, 0, False, 0, None))
    assert q.qsize() == 4 and (counts.merged, counts.dropped) == (0, 0)
    q.put_nowait(_reading("a", {"rr": 12}))  # a reading still merges into a's waiting one
    assert counts.merged == 1
    assert json.loads(q.get_nowait().payload) == {"metrics": {"hr": 70, "rr": 12}}  # type: ignore[arg-type]
    assert [q.get_nowait().topic.value.rsplit("/", 1)[1] for _ in range(3)] == ["events"] * 3


async def test_a_waiting_consumer_gets_what_is_queued() -> None:
    counts = ShedCounts()
    q = readings_queue(shed_above=1, drop_above=1, max_bytes=MAX, counts=counts)()
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put_nowait(_reading("a", {"hr": 70}))
    assert json.loads((await asyncio.wait_for(getter, 1)).payload) == {"metrics": {"hr": 70}}  # type: ignore[arg-type]


def test_the_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="shed_above"):
        readings_queue(shed_above=10, drop_above=5, max_bytes=MAX, counts=ShedCounts())

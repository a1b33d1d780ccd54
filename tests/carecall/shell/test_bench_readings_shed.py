"""The bench reports the readings the gateways merged or dropped during the alarm phase
(issue 15: readings are shed first under overload, counted, never silently): each
worker's stats carry its counters, and the phase sums them over the gateway workers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from carecall.core import metrics as m
from carecall.shell.bench_phases import readings_shed
from carecall.shell.bench_targets import Target
from carecall.shell.bench_worker import _shed


def _worker(stats: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(stats=lambda: stats)


def test_the_phase_sums_every_gateway_workers_shed_readings() -> None:
    t = SimpleNamespace(
        gateways=[
            _worker({"gateway": {"readings_merged": 7, "readings_dropped": 1}}),
            _worker({"gateway": {"readings_merged": 5, "readings_dropped": 0}}),
            _worker({"ready": False}),  # not up yet: no gateway stats, counts as none
        ]
    )
    assert readings_shed(cast(Target, t)) == {"merged": 12, "dropped": 1}


def test_a_worker_reads_its_own_shed_counters() -> None:
    before = _shed("merged"), _shed("dropped")
    m.READINGS_SHED.labels("merged").inc(3)
    m.READINGS_SHED.labels("dropped").inc()
    assert (_shed("merged"), _shed("dropped")) == (before[0] + 3, before[1] + 1)

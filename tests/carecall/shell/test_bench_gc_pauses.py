"""The bench reports each process's garbage-collector pauses during the alarm phase: each
worker's stats carry its pauses of 10 ms or more with when they ended (monotonic, one
clock for the machine), and the phase keeps those inside its own window, the bench's own
included (it plays the devices and the consoles)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from carecall.core import heap
from carecall.shell.bench_phases import gc_pauses
from carecall.shell.bench_targets import Target
from carecall.shell.bench_worker import _Stats


def _worker(name: str, stats: dict[str, Any]) -> SimpleNamespace:
    return SimpleNamespace(name=name, stats=lambda: stats)


def test_the_phase_keeps_each_workers_pauses_inside_its_window() -> None:
    t = SimpleNamespace(
        workers=[
            _worker("gateway0-events", {"gc_long": [[5.0, 2, 0.2], [10.5, 0, 0.012], [11.0, 2, 0.03]]}),
            _worker("dispatcher0", {"gc_long": [[20.1, 2, 0.5]]}),  # after the phase
            _worker("web", {"ready": False}),  # no stats yet: no pauses
        ]
    )
    out = gc_pauses(cast(Target, t), 10.0, 20.0)
    assert out["gateway0-events"] == {"over_10ms": 2, "sum_ms": 42.0, "longest_ms": 30.0}
    assert out["dispatcher0"] == {"over_10ms": 0, "sum_ms": 0.0, "longest_ms": 0.0}
    assert out["web"]["over_10ms"] == 0
    assert set(out) == {"gateway0-events", "dispatcher0", "web", "bench"}


def test_a_long_pause_is_kept_with_when_it_ended_and_a_short_one_only_counted() -> None:
    pauses = heap.GcPauses()
    for seconds in (0.002, 0.04):
        pauses.callback("start", {"generation": 2})
        pauses._started = time.perf_counter() - seconds  # as if the collection took that long
        pauses.callback("stop", {"generation": 2})
    assert pauses.generations[2].count == 2
    [(at, generation, seconds)] = pauses.recent()
    assert generation == 2 and seconds >= 0.04 and abs(at - time.monotonic()) < 5


def test_a_workers_stats_carry_its_long_pauses(tmp_path: Path) -> None:
    heap.watch()
    heap.PAUSES.long.append((time.monotonic(), 2, 0.25))
    snap = _Stats(tmp_path / "w.stats.json", "dispatcher").snapshot()
    assert list(snap["gc_long"][-1])[1:] == [2, 0.25]

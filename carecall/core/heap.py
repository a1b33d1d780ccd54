"""The garbage collector on the alarm path: freeze the startup heap, time every pause.

CPython's cyclic collector stops the whole process while it runs, and a full
(generation 2) collection scans every object the process tracks. A CareCall process
carries several hundred thousand of them from its start alone (SQLAlchemy's mappers,
pydantic's models, FastAPI's routes, the device directory), so each full collection held
the event loop, and with it every ack or console update waiting on it, for a long time:
in the quiet bench on the 2-core test machine (docs/performance.md, "The garbage
collector"), the longest pause was 218 ms in the gateway's events lane, 270 ms in the
dispatcher and 533 ms in the web server.

``settle()`` collects once and then freezes what survives (``gc.freeze``): frozen
objects are never scanned again, so later collections look only at what the process
allocated since. Reference counting still frees a frozen object the moment nothing uses
it; only a reference cycle among objects alive at the freeze would outlive its use,
which is why the processes settle after they have started and warmed their caches, and
not while they carry traffic. ``CARECALL_GC_FREEZE=false`` turns it off.

``watch()`` times every collection into ``carecall_gc_pause_seconds`` (by generation) on
/metrics (of the processes that serve it), and keeps the pauses of 10 ms or more with
when they ended, for ``carecall bench`` to report per process. The callback runs inside the collector, where taking a lock the
interrupted code may hold would deadlock: it only adds to plain integers and floats, and
the histogram is built from them when /metrics is read.
"""

from __future__ import annotations

import bisect
import gc
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from carecall.core.metrics import REGISTRY

log = structlog.get_logger("carecall.heap")

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LONG_S = 0.01  # pauses kept one by one, with when they ended (``GcPauses.long``)


@dataclass
class PauseCounts:
    """Collections of one generation: counts per bucket (the last: beyond every bound)."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total_s: float = 0.0
    longest_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total_s += seconds
        if seconds > self.longest_s:
            self.longest_s = seconds

    @property
    def count(self) -> int:
        return sum(self.buckets)


class GcPauses(Collector):
    """The collector's pauses in this process, as a Prometheus histogram per generation."""

    def __init__(self) -> None:
        self.generations = [PauseCounts() for _ in range(3)]
        # the last pauses of LONG_S or more: (time.monotonic() at their end, generation, s)
        self.long: deque[tuple[float, int, float]] = deque(maxlen=2000)
        self._started = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            seconds = time.perf_counter() - self._started
            generation = min(max(int(info.get("generation", 2)), 0), 2)
            self.generations[generation].add(seconds)
            if seconds >= LONG_S:
                self.long.append((time.monotonic(), generation, seconds))

    def recent(self) -> list[tuple[float, int, float]]:
        """A copy of ``long`` (a collection during the copy may append to it: copy again)."""
        for _ in range(3):
            try:
                return list(self.long)
            except RuntimeError:
                continue
        return []

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "carecall_gc_pause_seconds",
            "Time the garbage collector stopped this process, by generation (2: a full collection)",
            labels=["generation"],
        )
        for generation, counts in enumerate(self.generations):
            cumulative, running = [], 0
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts.buckets, strict=True):
                running += n
                cumulative.append((bound, running))
            family.add_metric([str(generation)], cumulative, counts.total_s)
        yield family


PAUSES = GcPauses()
_watching = False


def watch() -> GcPauses:
    """Time this process's collections (once per process; later calls change nothing)."""
    global _watching
    if not _watching:
        gc.callbacks.append(PAUSES.callback)
        REGISTRY.register(PAUSES)
        _watching = True
    return PAUSES


def settle(role: str, enabled: bool = True) -> int:
    """Collect, then freeze what is left out of every later collection; the number of
    objects frozen in all (0 when ``enabled`` is false: nothing is done)."""
    if not enabled:
        return 0
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info(
        "process.heap_settled",
        role=role,
        frozen_objects=frozen,
        took_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return frozen


def pauses_between(long: Iterable[Iterable[float]], start: float, end: float) -> dict[str, float | int]:
    """The pauses of LONG_S or more that ended between ``start`` and ``end`` (monotonic
    seconds, the same clock in every process of a machine): how many, their sum and the
    longest, in ms. ``long`` as ``GcPauses.long`` holds them (or its JSON: lists)."""
    seconds = [float(s) for at, _gen, s in (tuple(p) for p in long) if start <= float(at) <= end]
    return {
        "over_10ms": len(seconds),
        "sum_ms": round(sum(seconds) * 1000, 1),
        "longest_ms": round(max(seconds, default=0.0) * 1000, 1),
    }

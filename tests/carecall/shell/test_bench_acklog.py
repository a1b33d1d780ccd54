"""The gateway's share of each ack, logged by the bench's workers and read back by phase
(carecall/shell/bench_acklog.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carecall.shell.bench_acklog import AckLog, ack_log_path, ack_slice_ms, acks_logged


def test_a_phase_reads_the_acks_logged_since_its_start(tmp_path: Path) -> None:
    path = ack_log_path(tmp_path / "gw.stats.json")
    log = AckLog(path)
    times: list[float] = [1.5, 2.5]
    assert log.append(times) == 2
    assert log.append(times) == 2, "nothing new: nothing written twice"
    start = acks_logged({"gateway": {"acks_logged": log.written}})
    times += [10.25, 20.5, 30.0]
    assert log.append(times) == 5
    assert ack_slice_ms(path, start) == pytest.approx([10.25, 20.5, 30.0])
    assert ack_slice_ms(path, 0, 2) == pytest.approx([1.5, 2.5])


def test_no_log_yet_is_no_acks(tmp_path: Path) -> None:
    assert ack_slice_ms(tmp_path / "none.acks.f32", 0) == []
    assert acks_logged({}) == 0

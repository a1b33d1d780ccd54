"""`carecall report bench` (carecall/shell/bench_reports.py): fills a scratch database and
times the reports against a baseline read in the same run (the figures it prints are the
reports' own)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from carecall.shell.cli.report import report_app


@pytest.mark.sqlite_only  # the bench without --database-url makes a temporary SQLite file
def test_report_bench_on_sqlite_prints_timings_and_figures() -> None:
    result = CliRunner().invoke(report_app, ["bench", "--calls", "300", "--repeat", "1"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{") :])
    assert out["backend"] == "sqlite" and out["calls"] == 300
    timings = out["timings"]
    assert set(timings) == {
        "baseline_read_audit_rows",
        "summary",
        "aggregates_by_station",
        "aggregates_by_day",
        "review_page_with_timelines",
        "review_all_rows",
    }
    assert timings["baseline_read_audit_rows"]["rows"] == out["audit_rows"]
    for name in ("summary", "aggregates_by_station", "review_all_rows"):
        assert timings[name]["median_s"] > 0 and timings[name]["vs_baseline"] > 0
    # every generated call started in the bench month and is in the figures
    assert out["figures"]["calls"] == 300
    assert timings["review_page_with_timelines"]["rows"] == min(500, out["figures"]["review"])
    assert timings["review_all_rows"]["rows"] == out["figures"]["review"]
    assert "× the baseline" in result.stdout

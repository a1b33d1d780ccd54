"""The lane phases' pure decisions: which phases run, and the ratios beside quiet."""

from __future__ import annotations

import pytest

from carecall.shell.bench_compare import (
    PHASES,
    dispatcher_loops_of,
    lane_rows,
    parse_phases,
    ratio,
    storm_lost,
)
from config.settings import load_settings


def test_phases_parse_in_the_bench_order_without_duplicates() -> None:
    assert parse_phases("flood, Quiet,flood") == ("quiet", "flood")
    assert parse_phases(",".join(reversed(PHASES))) == PHASES


@pytest.mark.parametrize(
    ("text", "names"), [("", "at least one"), (" , ", "at least one"), ("quiet,storm", "'storm'")]
)
def test_bad_phases_are_named(text: str, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        parse_phases(text)


def test_ratio_needs_two_numbers_and_a_positive_reference() -> None:
    assert ratio(30.0, 10) == 3.0
    assert ratio(5, 20) == 0.25
    assert ratio(None, 10) is None
    assert ratio(10, None) is None
    assert ratio(10, 0) is None
    assert ratio(True, 1) is None


def test_lane_rows_set_each_phase_beside_its_quiet_figure() -> None:
    figures = {
        "alarm_ack_p99_ms": 100.0,
        "contended_alarm_ack_p99_ms": 450.0,
        "flood_quiet_ack_p99_ms": 8.0,
        "flood_ack_p99_ms": 12.0,
    }
    rows = lane_rows(figures, ("quiet", "contended", "flood"))
    by = {(section, label): (q, v, r) for section, label, q, v, r in rows}
    assert by[("contended", "event→'received' ack p99 (ms)")] == (100.0, 450.0, 4.5)
    assert ("contended", "escalation timer fired−due p99 (ms)") in by
    assert ("contended", "event→call on a console (SSE) p99 (ms)") in by
    assert by[("flood", "other devices' SOS ack p99 (ms)")] == (8.0, 12.0, 1.5)
    # a figure missing on either side gives no ratio, never a made-up one
    assert by[("contended", "storm ack p99 (ms)")] == (None, None, None)
    assert {s for s, *_ in rows} == {"contended", "flood"}


def test_lane_rows_only_for_the_phases_that_ran() -> None:
    assert lane_rows({"contended_alarm_ack_p99_ms": 1.0}, ("quiet",)) == []
    rows = lane_rows({"contended_alarm_ack_p99_ms": 1.0}, ("contended",))
    assert rows and all(r[0] == "contended" and r[4] is None for r in rows)


def test_storm_lost_counts_not_stored_not_acked_not_routed() -> None:
    assert storm_lost({"events": 100, "lost": 2, "acked": 95, "routed_into_calls": 97}) == 2 + 5 + 3
    assert storm_lost({"events": 10, "lost": 0, "acked": 10, "routed_into_calls": 10}) == 0


def test_copy_kill_is_a_phase_but_not_a_default_one() -> None:
    from carecall.shell.bench_compare import DEFAULT_PHASES

    assert parse_phases("copy-kill,quiet") == ("quiet", "copy-kill")
    assert "copy-kill" not in DEFAULT_PHASES  # the default target is embedded
    assert set(DEFAULT_PHASES) < set(PHASES)


def test_copy_kill_needs_the_real_target() -> None:
    from carecall.shell.bench_compare import check_phases_for_targets, phases_for_target

    with pytest.raises(ValueError, match=r"real target only.*--target real"):
        check_phases_for_targets(("embedded",), ("quiet", "copy-kill"))
    with pytest.raises(ValueError, match="nothing to run"):
        check_phases_for_targets(("embedded", "real"), ("copy-kill",))
    check_phases_for_targets(("real",), ("copy-kill",))
    check_phases_for_targets(("embedded", "real"), ("flood", "copy-kill"))
    # --target all: the embedded target leaves it out, the real one runs it
    assert phases_for_target("embedded", ("flood", "copy-kill")) == ("flood",)
    assert phases_for_target("real", ("flood", "copy-kill")) == ("flood", "copy-kill")


def test_ingest_is_skipped_only_when_copy_kill_runs_alone() -> None:
    from carecall.shell.bench_compare import runs_ingest

    assert not runs_ingest(("copy-kill",))
    assert runs_ingest(("quiet", "copy-kill"))
    assert runs_ingest(("flood",))


def test_bench_refuses_copy_kill_on_the_embedded_target() -> None:
    from typer.testing import CliRunner

    from carecall.shell.cli import app

    result = CliRunner().invoke(app, ["bench", "--phases", "copy-kill"])
    assert result.exit_code == 2
    assert "real target only" in result.output and "--target real" in result.output


def test_dispatcher_lanes_give_one_intake_copy_and_the_rest_elsewhere() -> None:
    assert dispatcher_loops_of("all", 2, ("quiet",)) == ["all", "all"]
    split = dispatcher_loops_of("split", 3, ("quiet",))
    assert split[0] == "intake" and len(split) == 3
    covered: set[str] = set()
    for loops in split:  # each a valid setting, and together every loop runs somewhere
        covered |= load_settings(
            database_url="sqlite:///unused.db", dispatcher_loops=loops
        ).dispatcher_loop_set
    assert covered == load_settings(database_url="sqlite:///unused.db").dispatcher_loop_set
    for lanes, copies, phases in (("split", 1, ("quiet",)), ("split", 2, ("copy-kill",)), ("some", 2, ())):
        with pytest.raises(ValueError):
            dispatcher_loops_of(lanes, copies, phases)

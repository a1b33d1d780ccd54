"""The live progress of ``carecall simulate``: plain lines off a terminal."""

from __future__ import annotations

from pathlib import Path

from simulators.live import LiveSummary, plain_line


def test_plain_progress_line_names_every_live_figure() -> None:
    from simulators.fleet import FleetStats

    st = FleetStats(
        elapsed_s=3,
        planned_s=60,
        devices=100,
        connections_planned=10,
        connections_online=9,
        load_devices=90,
        messages=1234,
        max_messages=10_000,
        msgs_per_s=400,
        telemetry_sent=1000,
        events_sent=234,
        events_acked=230,
        acks_received=240,
        resends=4,
        offline_devices=2,
        conn_ack_p50_ms=3.2,
        conn_ack_p99_ms=20.5,
        load_ack_p50_ms=None,
        load_ack_p99_ms=None,
    )
    line = plain_line(st)
    for part in (
        "conn 9/10",
        "msgs 1234 (400/s)",
        "acked 230",
        "acks 240",
        "resends 4",
        "offline 2",
        "3.2/20.5",
    ):
        assert part in line


def test_live_summary_plain_mode_writes_lines(tmp_path: Path) -> None:
    from simulators.fleet import FleetStats

    fields = dict.fromkeys(FleetStats.model_fields, 0)
    fields.update(conn_ack_p50_ms=None, conn_ack_p99_ms=None, load_ack_p50_ms=None, load_ack_p99_ms=None)
    out = tmp_path / "log.txt"
    with out.open("w") as fh, LiveSummary(fh, rich=False, plain_every_s=0) as live:
        live.say("hello")
        live.update(FleetStats(**fields))
    lines = out.read_text().splitlines()
    assert lines[0] == "hello" and lines[1].startswith("t=0/0s")

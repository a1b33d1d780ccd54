"""``carecall gateway --lane`` and ``carecall bench --gateway-lanes``: described in --help,
and a wrong value is refused before anything starts (issue 15)."""

from __future__ import annotations

from typer.testing import CliRunner

from carecall.shell.cli import app


def _cli() -> CliRunner:
    return CliRunner(env={"CARECALL_LOG_LEVEL": "WARNING", "COLUMNS": "100"})


def test_gateway_help_describes_the_lanes() -> None:
    result = _cli().invoke(app, ["gateway", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--lane" in text and "events" in text and "readings" in text and "CARECALL_GATEWAY_LANE" in text


def test_gateway_refuses_an_unknown_lane_before_starting() -> None:
    result = _cli().invoke(app, ["gateway", "--lane", "alarms"])
    assert result.exit_code != 0
    assert "--lane must be all, events or readings" in result.output


def test_gateway_refuses_a_bad_lane_setting_naming_it() -> None:
    result = CliRunner(env={"CARECALL_GATEWAY_LANE": "both", "CARECALL_LOG_LEVEL": "WARNING"}).invoke(
        app, ["gateway"]
    )
    assert result.exit_code != 0
    assert "CARECALL_GATEWAY_LANE" in result.output


def test_bench_refuses_an_unknown_gateway_lanes_value() -> None:
    result = _cli().invoke(app, ["bench", "--target", "real", "--gateway-lanes", "three"])
    assert result.exit_code != 0
    assert "--gateway-lanes must be all or split" in " ".join(result.output.split())


def test_bench_refuses_an_unknown_priorities_value() -> None:
    result = _cli().invoke(app, ["bench", "--target", "real", "--priorities", "high"])
    assert result.exit_code != 0
    assert "--priorities must be auto or off" in " ".join(result.output.split())

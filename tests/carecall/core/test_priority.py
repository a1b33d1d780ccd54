"""CPU priorities (issue 15): which nice value each process asks for, that every thread of
the process gets it, and that a refused raise is said once and leaves the process running.

Anything that changes a priority runs in a child process: the test runner keeps its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from carecall.core.priority import AUTO_NICE, nice_for, role_of
from carecall.shell.cli import app
from config.settings import Settings, SettingsError, load_settings


def test_auto_puts_the_alarm_lane_first_and_the_readings_last() -> None:
    assert nice_for("gateway-events", "auto") < nice_for("dispatcher", "auto")  # type: ignore[operator]
    assert nice_for("gateway-all", "auto") == nice_for("gateway-events", "auto")
    assert nice_for("dispatcher", "auto") == nice_for("serve", "auto") == -5
    assert nice_for("gateway-readings", "auto") == 10
    assert set(AUTO_NICE) == {"gateway-all", "gateway-events", "gateway-readings", "dispatcher", "serve"}


def test_off_leaves_the_priority_alone_and_a_number_is_taken_as_it_is() -> None:
    assert nice_for("gateway-events", "off") is None
    assert nice_for("gateway-readings", "-3") == -3
    with pytest.raises(ValueError):
        nice_for("serve", "20")


def test_role_of_each_process() -> None:
    assert role_of("gateway", "events") == "gateway-events"
    assert role_of("gateway", "readings") == "gateway-readings"
    assert role_of("gateway") == "gateway-all"
    assert role_of("dispatcher") == "dispatcher"
    assert role_of("serve") == "serve"
    with pytest.raises(ValueError):
        role_of("gateway", "alarms")
    with pytest.raises(ValueError):
        role_of("embedded")


@pytest.mark.parametrize(("given", "kept"), [("auto", "auto"), (" OFF ", "off"), ("-5", "-5"), (7, "7")])
def test_the_setting_takes_auto_off_or_a_nice_value(given: object, kept: str) -> None:
    assert Settings(cpu_priority=given).cpu_priority == kept  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["high", "-21", "20", "1.5", True])
def test_the_setting_refuses_anything_else_naming_it(bad: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECALL_CPU_PRIORITY", str(bad))
    with pytest.raises(SettingsError, match=r"CPU_PRIORITY|cpu_priority"):
        load_settings()


def _child(body: str) -> dict[str, object]:
    """Run ``body`` in a fresh interpreter; it prints one JSON line."""
    code = textwrap.dedent(body)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1]), stderr=out.stderr)


def test_every_thread_gets_the_nice_value_and_threads_started_later_inherit_it() -> None:
    got = _child(
        """
        import json, os, threading
        from carecall.core.priority import apply_nice

        started = threading.Event(); done = threading.Event()
        tids = []
        def run():
            tids.append(threading.get_native_id()); started.set(); done.wait(10)
        early = threading.Thread(target=run); early.start(); started.wait(10)
        applied = apply_nice("gateway-readings", "auto")
        later_nice = []
        t = threading.Thread(target=lambda: later_nice.append(os.getpriority(os.PRIO_PROCESS, 0)))
        t.start(); t.join()
        early_nice = os.getpriority(os.PRIO_PROCESS, tids[0])
        done.set(); early.join()
        print(json.dumps({"now": applied.now, "raised": applied.raised, "early": early_nice,
                          "later": later_nice[0], "main": os.getpriority(os.PRIO_PROCESS, 0)}))
        """
    )
    assert got["now"] == got["main"] == got["early"] == got["later"] == 10
    assert got["raised"] is True


def test_a_refused_raise_is_logged_once_and_the_process_runs_on() -> None:
    # started at nice 5 without the right to go lower: as root, drop to nobody first
    got = _child(
        """
        import json, os, resource
        from carecall.core.logs import configure_logging
        from carecall.core.priority import apply_nice
        configure_logging("INFO", "json")
        os.setpriority(os.PRIO_PROCESS, 0, 5)
        resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
        if os.geteuid() == 0:  # (everything imported first: nobody may not read the venv)
            os.setgid(65534); os.setuid(65534)
        applied = apply_nice("gateway-events", "auto")
        print(json.dumps({"now": applied.now, "raised": applied.raised, "wanted": applied.wanted}))
        """
    )
    assert (got["now"], got["raised"], got["wanted"]) == (5, False, -10)
    assert str(got["stderr"]).count("process.priority_not_raised") == 1


def test_off_changes_nothing() -> None:
    got = _child(
        """
        import json, os
        os.setpriority(os.PRIO_PROCESS, 0, 3)
        from carecall.core.priority import apply_nice
        a = apply_nice("gateway-events", "off")
        print(json.dumps({"now": a.now, "wanted": a.wanted}))
        """
    )
    assert got["now"] == 3 and got["wanted"] is None


@pytest.mark.parametrize(
    ("argv", "env", "role"),
    [
        (["gateway", "--lane", "readings"], {}, "gateway-readings"),
        (["gateway"], {"CARECALL_GATEWAY_LANE": "events"}, "gateway-events"),
        (["dispatcher"], {}, "dispatcher"),
        (["serve"], {}, "serve"),
    ],
)
def test_each_command_asks_for_its_role_before_it_starts(
    argv: list[str], env: dict[str, str], role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carecall.shell import runtime
    from carecall.shell.cli import parts

    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(parts, "apply_nice", lambda r, s: asked.append((r, s)))

    async def started(*_args: object) -> None:
        asked.append(("started", ""))

    for name in ("run_gateway", "run_dispatcher", "run_serve"):
        monkeypatch.setattr(runtime, name, started)
    result = CliRunner(env={"CARECALL_LOG_LEVEL": "WARNING", "CARECALL_CPU_PRIORITY": "off", **env}).invoke(
        app, argv
    )
    assert result.exit_code == 0, result.output
    assert asked == [(role, "off"), ("started", "")]

"""The real target's clean-up of retained messages (carecall/shell/bench_retained.py):
which device ids a run sweeps, and that a broker it cannot reach is reported, not raised.
Against the real Mosquitto: tests/integration/test_retained_sweep.py."""

from __future__ import annotations

from carecall.shell.bench_retained import clear_run_retained, run_device_ids
from carecall.shell.bench_targets import free_port
from carecall.shell.fleet_registry import Fleet, device_id


def fleet(prefix: str, n: int) -> Fleet:
    devices = [device_id(prefix, i) for i in range(n)]
    return Fleet(
        prefix, [f"{prefix}-h{i:06d}" for i in range(n)], devices, f"{prefix}-carecall-loadgen", "s", {}
    )


def test_a_run_sweeps_the_devices_of_every_fleet_it_registered_and_their_load_generators() -> None:
    main = fleet("bench1a2b", 3)
    phases = {"contended": fleet("bench1a2bc", 2), "copy-kill": fleet("bench1a2bck", 1)}
    ids = run_device_ids(main, phases)
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert set(ids) == {
        "bench1a2b-d000000",
        "bench1a2b-d000001",
        "bench1a2b-d000002",
        "bench1a2b-carecall-loadgen",
        "bench1a2bc-d000000",
        "bench1a2bc-d000001",
        "bench1a2bc-carecall-loadgen",
        "bench1a2bck-d000000",
        "bench1a2bck-carecall-loadgen",
    }
    assert run_device_ids(main, {}) == sorted([*main.devices, main.loadgen_id])


def test_an_unreachable_broker_is_reported_on_the_progress_lines_not_raised() -> None:
    said: list[str] = []
    port = free_port()  # nothing listens there
    assert clear_run_retained("127.0.0.1", port, ["bench1a2b-d000000"], said.append, timeout_s=3) is None
    assert said[0] == f"clearing retained messages of the run's 1 devices on 127.0.0.1:{port} …"
    assert said[1].startswith("retained messages of the run NOT cleared:")

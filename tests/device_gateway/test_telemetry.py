"""Telemetry's fast path (device_gateway/telemetry.py) against the full parser."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

_metric_value = st.one_of(
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
_telemetry_obj = st.fixed_dictionaries(
    {"metrics": st.dictionaries(st.text(max_size=70), _metric_value, max_size=70)},
    optional={
        "ts": st.one_of(st.integers(min_value=0, max_value=5 * 10**12), st.text(max_size=10), st.booleans()),
        "extra": st.text(max_size=5),
    },
)


@given(obj=_telemetry_obj)
@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fast_telemetry_path_accepts_only_what_the_parser_accepts_alike(obj: dict[str, Any]) -> None:
    """The hot path may decline anything, but what it accepts the full parser accepts with
    exactly the same metrics (or every reading would bypass validation)."""
    from device_gateway import protocol as p
    from device_gateway.telemetry import fast_telemetry_metrics

    payload = json.dumps(obj, allow_nan=True).encode()
    fast = fast_telemetry_metrics(payload, p.MAX_PAYLOAD_BYTES)
    if fast is None:
        return
    full = p.parse_telemetry(payload)
    assert isinstance(full, p.TelemetryMessage), full
    assert fast == full.metrics
    assert [type(v) for v in fast.values()] == [type(v) for v in full.metrics.values()]


@given(payload=st.binary(max_size=300))
@hsettings(max_examples=300, deadline=None)
def test_fast_telemetry_path_never_accepts_what_the_parser_rejects(payload: bytes) -> None:
    from device_gateway import protocol as p
    from device_gateway.telemetry import fast_telemetry_metrics

    if fast_telemetry_metrics(payload, p.MAX_PAYLOAD_BYTES) is not None:
        assert isinstance(p.parse_telemetry(payload), p.TelemetryMessage)


def test_fast_telemetry_path_takes_ordinary_readings_and_declines_the_odd_ones() -> None:
    from device_gateway.telemetry import fast_telemetry_metrics

    ok = b'{"ts":1764120600123,"metrics":{"hr":68,"rr":15.5,"presence":"in_bed","bed":true}}'
    assert fast_telemetry_metrics(ok, 16384) == {"hr": 68, "rr": 15.5, "presence": "in_bed", "bed": True}
    for odd in (
        b'{"ts":"2026-11-26T10:00:00+08:00","metrics":{"hr":1}}',  # RFC 3339: full parser
        b'{"metrics":{"hr":1},"fw":"1.2"}',  # extra top-level field
        b'{"metrics":{"note":"\\u00e9"}}',  # non-ASCII
        b'{"metrics":{"hr":NaN}}',
        b'{"metrics":{"hr":{"x":1}}}',
        b'{"metrics":{"fw":"' + b"x" * 65 + b'"}}',
        b"\xff",
        b'{"ts":12,"metrics":{}}',
    ):
        assert fast_telemetry_metrics(odd, 16384) is None, odd


def test_load_generator_telemetry_is_valid_telemetry() -> None:
    """The bench's readings must be telemetry the gateway accepts, not rejections."""
    from device_gateway import protocol as p
    from device_gateway.telemetry import fast_telemetry_metrics
    from simulators.loadgen import LoadGenerator

    gen = LoadGenerator("127.0.0.1", 1)
    sent: list[bytes] = []
    gen._publish = lambda _topic, payload, _qos: sent.append(payload)  # type: ignore[method-assign]
    for pad in (0, 200, 1000):
        gen.telemetry("d1", pad_to=pad)
        assert len(sent[-1]) >= pad
        assert isinstance(p.parse_telemetry(sent[-1]), p.TelemetryMessage)
        assert fast_telemetry_metrics(sent[-1], p.MAX_PAYLOAD_BYTES) is not None

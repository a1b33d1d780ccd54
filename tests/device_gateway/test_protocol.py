"""The v1 device contract as the parser sees it.

Every rejection reason, every example from the contract, topic spoofing, and fuzzing:
whatever bytes a device sends, parsing must answer with a model or a Rejection, because
an exception in the gateway would stop calls from every other home too.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_gateway.protocol import (
    DEFAULT_CLASS,
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_METRICS,
    MAX_PAYLOAD_BYTES,
    V1_TYPES,
    AckMessage,
    AckState,
    Channel,
    ConfigMessage,
    EventClass,
    EventMessage,
    Reason,
    Rejection,
    StatusMessage,
    TelemetryMessage,
    ack_payload,
    claimed_device,
    classify,
    decode_json,
    excerpt,
    is_night,
    parse_event,
    parse_status,
    parse_telemetry,
    parse_topic,
    parse_ts,
    topic_for,
)

# Verbatim from the contract (docs/protocol.md).
EVENT_EXAMPLE = (
    b'{"id": "b1-000412", "ts": 1764120600123, "type": "sos", "sensor": "bedside-button",\n'
    b' "data": {"location": {"lat": 32.689, "lon": 112.838, "accuracy_m": 15}}}'
)
TELEMETRY_EXAMPLE = b"""{"ts": 1764120600123, "metrics": {"hr": 68, "rr": 15, "presence": "in_bed",
 "motion": 3, "battery_pct": 81, "rssi_dbm": -70}}"""
ACK_EXAMPLE = b'{"event_id": "b1-000412", "state": "received", "ts": 1764120600180}'
STATUS_ONLINE = b'{"state":"online"}'
STATUS_OFFLINE = b'{"state":"offline"}'

TS = 1764120600123


def event(**fields: Any) -> bytes:
    body: dict[str, Any] = {"id": "b1-000412", "ts": TS, "type": "sos"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def rejected(result: object, reason: Reason) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.reason is reason, result
    assert result.detail
    return result


# --------------------------------------------------------------------------- examples


def test_event_example() -> None:
    ev = parse_event(EVENT_EXAMPLE)
    assert isinstance(ev, EventMessage)
    assert (ev.id, ev.type, ev.sensor) == ("b1-000412", "sos", "bedside-button")
    assert ev.happened_at == datetime(2025, 11, 26, 1, 30, 0, 123000, tzinfo=UTC)
    loc = ev.location
    assert loc is not None and (loc.lat, loc.lon, loc.accuracy_m) == (32.689, 112.838, 15)
    assert classify(ev.type, ev.data, 12) is EventClass.emergency


def test_telemetry_example() -> None:
    tm = parse_telemetry(TELEMETRY_EXAMPLE)
    assert isinstance(tm, TelemetryMessage)
    assert tm.metrics == {
        "hr": 68,
        "rr": 15,
        "presence": "in_bed",
        "motion": 3,
        "battery_pct": 81,
        "rssi_dbm": -70,
    }


@pytest.mark.parametrize(("payload", "state"), [(STATUS_ONLINE, "online"), (STATUS_OFFLINE, "offline")])
def test_status_examples(payload: bytes, state: str) -> None:
    st_ = parse_status(payload)
    assert isinstance(st_, StatusMessage) and st_.state == state


def test_ack_example_and_ack_payload_agree() -> None:
    ack = AckMessage.model_validate_json(ACK_EXAMPLE)
    assert ack.state is AckState.received
    built = ack_payload("b1-000412", AckState.received, 1764120600180)
    assert json.loads(built) == json.loads(ACK_EXAMPLE)
    rej = json.loads(ack_payload("x", AckState.rejected, 1, Reason.not_json))
    assert rej == {"event_id": "x", "state": "rejected", "ts": 1, "reason": "not_json"}


def test_config_example() -> None:
    assert ConfigMessage.model_validate({"heartbeat_s": 60}).heartbeat_s == 60


def test_minimal_event_and_extra_fields_are_kept() -> None:
    # Optional fields may be added in v1; a device sending one must not lose its call.
    ev = parse_event(event(firmware="1.2.3"))
    assert isinstance(ev, EventMessage)
    assert ev.data == {} and ev.sensor is None
    assert ev.model_extra == {"firmware": "1.2.3"}


@pytest.mark.parametrize("event_type", sorted(V1_TYPES))
def test_every_v1_type_parses(event_type: str) -> None:
    # a service_request must say which service (its one required data key)
    data = {"data": {"kind": "meal"}} if event_type == "service_request" else {}
    assert isinstance(parse_event(event(type=event_type, **data)), EventMessage)


def test_unknown_type_is_accepted_and_classified_trouble() -> None:
    ev = parse_event(event(type="Fall Detected v2"))
    assert isinstance(ev, EventMessage)
    assert classify(ev.type, ev.data, 3) is EventClass.trouble


@pytest.mark.parametrize(
    "ts",
    [
        "2025-11-26T09:30:00+08:00",
        "2025-11-26T01:30:00Z",
        "2025-11-26t01:30:00z",
        "2025-11-26 09:30:00+08:00",
        "2025-11-26T01:30:00.123456789-05:00",
    ],
)
def test_rfc3339_timestamps(ts: str) -> None:
    ev = parse_event(event(ts=ts))
    assert isinstance(ev, EventMessage)
    assert ev.happened_at.tzinfo is UTC


def test_string_and_integer_ts_agree() -> None:
    assert parse_ts("2025-11-26T09:30:00.123+08:00") == parse_ts(TS)


def test_cancel_with_string_ref() -> None:
    ev = parse_event(event(type="cancel", data={"ref": "b1-000411"}))
    assert isinstance(ev, EventMessage)
    assert classify(ev.type, ev.data, 12) is EventClass.cancel


def test_ref_is_free_for_other_types() -> None:
    assert isinstance(parse_event(event(type="sos", data={"ref": 5})), EventMessage)


def test_location_may_be_null_and_keeps_extra_keys() -> None:
    ev = parse_event(event(data={"location": None}))
    assert isinstance(ev, EventMessage) and ev.location is None
    ev = parse_event(event(data={"location": {"lat": -90, "lon": 180, "alt_m": 40}}))
    assert isinstance(ev, EventMessage)
    assert ev.data["location"]["alt_m"] == 40


# --------------------------------------------------------------------------- rejections


def test_too_large() -> None:
    big = event(data={"pad": "x" * MAX_PAYLOAD_BYTES})
    rejected(parse_event(big), Reason.too_large)
    rejected(parse_telemetry(b"{}", max_bytes=1), Reason.too_large)
    assert isinstance(parse_event(EVENT_EXAMPLE, max_bytes=len(EVENT_EXAMPLE)), EventMessage)


@pytest.mark.parametrize("payload", [b"\xff", b'{"id":"\xc3"}', b"\xed\xa0\x80", b"\xef\xbb\xbf{}"[1:]])
def test_not_utf8(payload: bytes) -> None:
    rejected(parse_event(payload), Reason.not_utf8)


def test_lone_surrogate_escape_is_not_utf8() -> None:
    rejected(parse_event(event(data={"note": "\ud800"})), Reason.not_utf8)
    rejected(parse_telemetry(b'{"metrics":{"\\udfff":1}}'), Reason.not_utf8)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"{",
        b"{'id': 'a'}",
        b'{"id":"a",}',
        b"\xef\xbb\xbf{}",  # a UTF-8 BOM is not JSON
        b'{"id":"a","ts":NaN,"type":"sos"}',
        b'{"id":"a","ts":Infinity,"type":"sos"}',
        b'{"id":"a","ts":-Infinity,"type":"sos"}',
        b'{"a":1} {"b":2}',
    ],
)
def test_not_json(payload: bytes) -> None:
    rejected(parse_event(payload), Reason.not_json)


def test_too_deep() -> None:
    deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    rejected(parse_event(f'{{"id":"a","data":{{"x":{deep}}}}}'.encode()), Reason.too_deep)
    rejected(parse_event(b"[" * 15000), Reason.too_deep)
    # Brackets inside strings are text, not nesting.
    assert isinstance(parse_event(event(sensor="[" * 60)), EventMessage)


@pytest.mark.parametrize("payload", [b"[]", b'"sos"', b"1", b"null", b"true"])
def test_not_object(payload: bytes) -> None:
    rejected(parse_event(payload), Reason.not_object)
    rejected(parse_status(payload), Reason.not_object)


@pytest.mark.parametrize("field", ["id", "ts", "type"])
def test_missing_field(field: str) -> None:
    r = rejected(parse_event(event(**{field: ...})), Reason.missing_field)
    assert field in r.detail


def test_missing_field_other_payloads() -> None:
    rejected(parse_telemetry(b'{"ts":1764120600123}'), Reason.missing_field)
    rejected(parse_status(b"{}"), Reason.missing_field)
    r = rejected(parse_event(event(data={"location": {"lon": 1}})), Reason.missing_field)
    assert "data.location.lat" in r.detail


@pytest.mark.parametrize(
    "fields",
    [
        {"id": 412},
        {"id": None},
        {"ts": True},  # bool where int expected
        {"ts": False},
        {"ts": 1764120600123.5},
        {"ts": [TS]},
        {"ts": None},
        {"type": 1},
        {"type": None},
        {"sensor": 7},
        {"data": []},
        {"data": "x"},
        {"data": None},
        {"data": {"location": "home"}},
        {"data": {"location": {"lat": "32.6", "lon": 112.8}}},
        {"data": {"location": {"lat": True, "lon": 112.8}}},
        {"data": {"location": {"lat": 32.6, "lon": 112.8, "accuracy_m": "15"}}},
        {"type": "cancel", "data": {"ref": 411}},
        {"type": "cancel", "data": {"ref": None}},
        {"type": "cancel", "data": {"ref": ["b1"]}},
    ],
)
def test_wrong_type(fields: dict[str, Any]) -> None:
    rejected(parse_event(event(**fields)), Reason.wrong_type)


def test_wrong_type_detail_names_the_field() -> None:
    r = rejected(parse_event(event(data={"location": {"lat": "x", "lon": 1}})), Reason.wrong_type)
    assert r.detail.startswith("data.location.lat:")
    r = rejected(parse_event(event(ts=None)), Reason.wrong_type)
    assert r.detail == "ts: null is not an accepted type here"
    r = rejected(parse_event(event(type="cancel", data={"ref": 1})), Reason.wrong_type)
    assert "data.ref" in r.detail


@pytest.mark.parametrize(
    "fields",
    [
        {"id": ""},
        {"id": "a" * 65},
        {"id": "b1 000412"},
        {"id": "b1/000412"},
        {"id": "b1-000412\n"},
        {"id": "呼叫-1"},
        {"type": ""},
        {"type": "x" * 65},
        {"sensor": "s" * 65},
        {"ts": 1764120600},  # seconds, not milliseconds
        {"ts": 0},
        {"ts": -1},
        {"ts": 10**18},
        {"ts": "2025-11-26T09:30:00"},  # no offset
        {"ts": "2025-11-26"},
        {"ts": "20251126T093000+0800"},  # ISO 8601 basic, not RFC 3339
        {"ts": " 2025-11-26T01:30:00Z"},
        {"ts": "2025-02-30T01:30:00Z"},
        {"ts": "2025-11-26T25:00:00Z"},
        {"ts": "2025-11-26T01:30:00+24:00"},
        {"ts": "1999-12-31T23:59:59Z"},
        {"ts": "２０２５-11-26T01:30:00Z"},  # full-width digits
        {"ts": "yesterday"},
        {"data": {"location": {"lat": 91, "lon": 0}}},
        {"data": {"location": {"lat": 0, "lon": -180.5}}},
        {"data": {"location": {"lat": 0, "lon": 0, "accuracy_m": -1}}},
        {"data": {"note": "a\u0000b"}},
    ],
)
def test_bad_value(fields: dict[str, Any]) -> None:
    rejected(parse_event(event(**fields)), Reason.bad_value)


def test_huge_numbers_are_rejections_not_exceptions() -> None:
    for digits in (MAX_INT_DIGITS + 1, 4301, 15000):
        payload = b'{"id":"a","ts":' + b"9" * digits + b',"type":"sos"}'
        r = rejected(parse_event(payload, max_bytes=10**6), Reason.bad_value)
        assert str(digits) in r.detail
    rejected(parse_telemetry(b'{"metrics":{"hr":-' + b"1" * 5000 + b"}}"), Reason.bad_value)
    rejected(parse_telemetry(b'{"metrics":{"hr":1e400}}'), Reason.bad_value)
    rejected(parse_telemetry(b'{"metrics":{"hr":-1e999}}'), Reason.bad_value)
    assert isinstance(parse_telemetry(b'{"metrics":{"hr":1e308}}'), TelemetryMessage)


def test_status_rejections() -> None:
    rejected(parse_status(b'{"state":"sleeping"}'), Reason.bad_value)
    rejected(parse_status(b'{"state":1}'), Reason.wrong_type)
    rejected(parse_status(b'{"state":true}'), Reason.wrong_type)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"metrics":[]}', Reason.wrong_type),
        (b'{"metrics":{"hr":null}}', Reason.wrong_type),
        (b'{"metrics":{"hr":[68]}}', Reason.wrong_type),
        (b'{"metrics":{"hr":{"v":68}}}', Reason.wrong_type),
        (b'{"ts":true,"metrics":{}}', Reason.wrong_type),
        (b'{"metrics":{"":1}}', Reason.bad_value),
        (b'{"metrics":{"presence":"' + b"x" * 65 + b'"}}', Reason.bad_value),
        (b'{"ts":"now","metrics":{}}', Reason.bad_value),
    ],
)
def test_telemetry_rejections(payload: bytes, reason: Reason) -> None:
    rejected(parse_telemetry(payload), reason)


def test_telemetry_metric_count_limit() -> None:
    ok = {f"m{i}": i for i in range(MAX_METRICS)}
    assert isinstance(parse_telemetry(json.dumps({"metrics": ok}).encode()), TelemetryMessage)
    ok["one_more"] = 1
    rejected(parse_telemetry(json.dumps({"metrics": ok}).encode()), Reason.bad_value)


def test_gateway_only_reasons_keep_their_codes() -> None:
    # Produced by the gateway, not by parse_*; the codes go out in acks, so they are fixed.
    assert {r.value for r in Reason} == {
        "too_large",
        "not_utf8",
        "not_json",
        "too_deep",
        "not_object",
        "missing_field",
        "wrong_type",
        "bad_value",
        "bad_topic",
        "unknown_device",
        "disabled_device",
    }


def test_decode_json_returns_plain_dict() -> None:
    assert decode_json(b'{"a":[1,2.5,"x",null,true]}', 100) == {"a": [1, 2.5, "x", None, True]}


def test_excerpt() -> None:
    assert excerpt(b"abc", 10) == "abc"
    assert excerpt(b"abcdef", 3) == "abc…"
    assert excerpt(b"a\x00\xffb", 10) == "a\\x00\\xffb"
    # A cut through a multi-byte character keeps the readable part.
    assert excerpt("呼叫".encode(), 4) == "呼\\xe5…"


# --------------------------------------------------------------------------- topics


def test_topic_round_trip() -> None:
    for channel in Channel:
        text = topic_for("hub_01-A", channel)
        t = parse_topic(text)
        assert t is not None and t.device_id == "hub_01-A" and t.channel is channel
        assert t.text == text
    assert parse_topic("carecall/v1/devices/" + "a" * 64 + "/events") is not None


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "carecall/v1/devices",
        "carecall/v1/devices/hub1",
        "carecall/v1/devices/hub1/",
        "carecall/v1/devices/hub1/events/extra",
        "carecall/v1/devices/hub1/hub2/events",
        "/carecall/v1/devices/hub1/events",
        "carecall/v2/devices/hub1/events",
        "Carecall/v1/devices/hub1/events",
        "carecall/v1/devices/hub1/heartbeat",
        "carecall/v1/devices/hub1/Events",
        "carecall/v1/devices/+/events",
        "carecall/v1/devices/#",
        "carecall/v1/devices/hub#/events",
        "carecall/v1/devices/hub+1/events",
        "carecall/v1/devices//events",
        "carecall/v1/devices/" + "a" * 65 + "/events",
        "carecall/v1/devices/床位一/events",
        "carecall/v1/devices/hub１/events",  # full-width digit
        "carecall/v1/devices/hub1\n/events",
        "carecall/v1/devices/hub.1/events",
        "carecall/v1/devices/hub 1/events",
        "carecall/v1/devices/hub1\x00/events",
    ],
)
def test_spoofed_or_malformed_topics(topic: str) -> None:
    assert parse_topic(topic) is None


def test_claimed_device() -> None:
    assert claimed_device("carecall/v1/devices/hub1/whatever/else") == "hub1"
    assert claimed_device("carecall/v1/devices/+/events") is None
    assert claimed_device("carecall/v1/devices/hub1\n/events") is None
    assert claimed_device("other/hub1/events") is None


@pytest.mark.parametrize("device_id", ["", "a" * 65, "a/b", "+", "#", "ab\n", "床"])
def test_topic_for_refuses_bad_ids(device_id: str) -> None:
    with pytest.raises(ValueError):
        topic_for(device_id, Channel.ack)


# --------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("returned", "hour", "expected"),
    [
        (False, 23, EventClass.urgent),
        (False, 2, EventClass.urgent),
        (False, 22, EventClass.urgent),
        (False, 5, EventClass.urgent),
        (False, 6, EventClass.info),
        (False, 14, EventClass.info),
        (True, 2, EventClass.info),
        (None, 2, EventClass.info),
        ("false", 2, EventClass.info),  # only a real false means "not back"
    ],
)
def test_bed_exit(returned: object, hour: int, expected: EventClass) -> None:
    data = {} if returned is None else {"returned": returned}
    assert classify("bed_exit", data, hour) is expected


def test_classify_defaults() -> None:
    for event_type, cls in DEFAULT_CLASS.items():
        if event_type != "bed_exit":
            assert classify(event_type, {}, 3) is cls
            assert classify(event_type, {}, 15) is cls
    assert classify("door_open", {}, 2) is EventClass.info
    assert classify("sos", {"returned": False}, 2) is EventClass.emergency
    assert classify("new_gadget_alarm", {}, 12) is EventClass.trouble
    assert classify("SOS", {}, 12) is EventClass.trouble  # types are case-sensitive


def test_is_night_wraps_midnight() -> None:
    assert [h for h in range(24) if is_night(h)] == [0, 1, 2, 3, 4, 5, 22, 23]


# --------------------------------------------------------------------------- fuzzing

PARSERS = (parse_event, parse_telemetry, parse_status)
MODELS = (EventMessage, TelemetryMessage, StatusMessage)


def check_outcome(result: object) -> None:
    if isinstance(result, Rejection):
        assert isinstance(result.reason, Reason)
        assert isinstance(result.detail, str)
        return
    assert isinstance(result, MODELS)
    # Whatever is accepted must be storable: JSON without NaN, encodable, no NUL.
    text = json.dumps(result.model_dump(mode="json"), allow_nan=False, ensure_ascii=False)
    assert "\x00" not in text
    text.encode("utf-8")
    if isinstance(result, EventMessage):
        assert result.happened_at.tzinfo is UTC


def run_all(payload: bytes) -> None:
    for parse in PARSERS:
        check_outcome(parse(payload))


# Raw JSON fragments the encoder would never produce but devices might.
RAW_NUMBERS = st.one_of(
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.integers(1, 6000).map(lambda n: "-1" + "0" * n),
    st.sampled_from(["1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "-0", "1E+2"]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.text(st.characters(codec=None, categories=["Cs", "Cc"]), max_size=3),
    st.sampled_from(["sos", "cancel", "bed_exit", "online", "2025-11-26T01:30:00Z", ""]),
    st.just(TS),
)
JSONISH = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def shaped(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the contract's keys, so fuzzing reaches validation, not only decoding."""
    return st.fixed_dictionaries(
        {},
        optional={
            "id": values,
            "ts": values,
            "type": values,
            "sensor": values,
            "data": values | st.fixed_dictionaries({}, optional={"location": values, "ref": values}),
            "metrics": values,
            "state": values,
        },
    )


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=1024))
def test_fuzz_bytes(payload: bytes) -> None:
    run_all(payload)


@FUZZ
@given(st.one_of(JSONISH, shaped(JSONISH)))
def test_fuzz_json_values(value: Any) -> None:
    run_all(json.dumps(value, allow_nan=True).encode("utf-8", errors="surrogatepass"))
    run_all(json.dumps(value, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))


@FUZZ
@given(shaped(JSONISH), st.sampled_from(["id", "ts", "metrics", "state", "data"]), RAW_NUMBERS)
def test_fuzz_raw_numbers(value: dict[str, Any], key: str, number: str) -> None:
    value[key] = "__N__"
    run_all(json.dumps(value).replace('"__N__"', number).encode())


@FUZZ
@given(st.integers(0, 3000), st.sampled_from(["[", "{", '{"a":[']), st.booleans())
def test_fuzz_deep_nesting(depth: int, opener: str, close: bool) -> None:
    closer = {"[": "]", "{": "}", '{"a":[': "]}"}[opener]
    inner = "1" if opener != "{" else ""
    body = opener * depth + inner + (closer * depth if close else "")
    run_all(body.encode())
    run_all(f'{{"id":"a","ts":{TS},"type":"sos","data":{{"x":{body or "0"}}}}}'.encode())


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000))
def test_fuzz_epoch_ms_in_range_always_parses(ts: int) -> None:
    ev = parse_event(event(ts=ts))
    assert isinstance(ev, EventMessage)
    assert math.isclose(ev.happened_at.timestamp() * 1000, ts, abs_tol=1)

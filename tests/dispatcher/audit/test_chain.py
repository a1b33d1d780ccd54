"""The audit chain: a sound chain verifies, and every kind of tampering is named at its seq."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.audit.chain import (
    GENESIS,
    PROBLEMS,
    AuditKind,
    ChainRow,
    canonical,
    link,
    next_row,
    verify,
)

T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


def make_chain(n: int) -> list[ChainRow]:
    rows: list[ChainRow] = []
    seq, prev = 0, GENESIS
    kinds = list(AuditKind)
    for i in range(n):
        row = next_row(
            seq,
            prev,
            call_id=i // 3 or None,
            at=T0 + timedelta(seconds=i, microseconds=i),
            kind=kinds[i % len(kinds)],
            actor="dispatcher" if i % 2 else "操作员 王",
            station_id=f"c{i % 4}" if i % 5 else None,
            detail={"i": i, "note": "跌倒 / fall", "nested": {"b": [1, 2], "a": None}},
        )
        rows.append(row)
        seq, prev = row.seq, row.hash
    return rows


def test_canonical_is_stable() -> None:
    content = canonical(
        seq=1,
        call_id=7,
        at=datetime(2026, 11, 26, 10, 0, tzinfo=timezone(timedelta(hours=8))),
        kind=AuditKind.call_opened,
        actor="王",
        station_id=None,
        detail={"b": 1, "a": "跌倒"},
    )
    assert (
        content
        == (
            '{"actor":"王","at":"2026-11-26T02:00:00.000000+00:00","call_id":7,'
            '"detail":{"a":"跌倒","b":1},"kind":"call_opened","seq":1,"station_id":null}'
        ).encode()
    )
    assert link(GENESIS, content) == hashlib.sha256(GENESIS.encode() + content).hexdigest()
    with pytest.raises(ValueError, match="timezone"):
        canonical(
            seq=1,
            call_id=None,
            at=datetime(2026, 1, 1),
            kind="note",
            actor="a",
            station_id=None,
            detail={},
        )


def test_audit_kinds_cover_the_record() -> None:
    assert {
        "call_opened",
        "escalated",
        "acknowledged",
        "handoff",
        "timer_stale",
        "watchdog_repair",
    } <= {k.value for k in AuditKind}


@given(n=st.integers(0, 30))
def test_sound_chain_verifies(n: int) -> None:
    rows = make_chain(n)
    head = (rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS)
    assert verify(rows, head=head) == verify(rows) == verify(iter(rows), head=head)
    verdict = verify(rows, head=head)
    assert verdict.ok and verdict.rows_checked == n and verdict.first_bad_seq is None


def test_partial_verification_from_a_known_point() -> None:
    rows = make_chain(10)
    assert verify(rows[4:], start=(rows[3].seq, rows[3].hash)).ok


@given(data=st.data(), n=st.integers(1, 30))
def test_edit_is_detected_at_its_seq(data: st.DataObject, n: int) -> None:
    rows = make_chain(n)
    i = data.draw(st.integers(0, n - 1))
    field = data.draw(st.sampled_from(["actor", "detail", "at", "kind", "station_id", "call_id"]))
    new: Any = {
        "actor": "someone else",
        "detail": {**rows[i].detail, "i": -1},
        "at": rows[i].at + timedelta(microseconds=1),
        "kind": "note" if rows[i].kind != "note" else "resolved",
        "station_id": "elsewhere",
        "call_id": 999,
    }[field]
    rows[i] = dataclasses.replace(rows[i], **{field: new})
    verdict = verify(rows)
    assert (verdict.ok, verdict.first_bad_seq, verdict.problem) == (
        False,
        i + 1,
        PROBLEMS["edited"],
    )
    assert verdict.rows_checked == i + 1


@given(data=st.data(), n=st.integers(2, 30))
def test_edit_with_rehash_is_caught_by_the_next_row(data: st.DataObject, n: int) -> None:
    rows = make_chain(n)
    i = data.draw(st.integers(0, n - 2))
    forged = next_row(
        rows[i].seq - 1,
        rows[i].prev_hash,
        call_id=rows[i].call_id,
        at=rows[i].at,
        kind="note",
        actor="forger",
        station_id=None,
        detail={},
    )
    rows[i] = forged
    verdict = verify(rows)
    assert (verdict.ok, verdict.first_bad_seq, verdict.problem) == (False, i + 2, PROBLEMS["prev"])


@given(data=st.data(), n=st.integers(2, 30))
def test_delete_is_detected(data: st.DataObject, n: int) -> None:
    rows = make_chain(n)
    head = (rows[-1].seq, rows[-1].hash)
    i = data.draw(st.integers(0, n - 1))
    del rows[i]
    verdict = verify(rows, head=head)
    assert not verdict.ok and verdict.first_bad_seq == i + 1
    if i < n - 1:
        assert verdict.problem == PROBLEMS["gap"]
        assert verify(rows).first_bad_seq == i + 1  # no head needed inside the chain
    else:
        assert verdict.problem == PROBLEMS["tail"]
        assert verify(rows).ok  # a cut tail needs the head to be seen


@given(data=st.data(), n=st.integers(2, 30))
def test_delete_and_renumber_is_detected(data: st.DataObject, n: int) -> None:
    rows = make_chain(n)
    i = data.draw(st.integers(0, n - 2))
    del rows[i]
    rows = [dataclasses.replace(r, seq=k + 1) for k, r in enumerate(rows)]
    verdict = verify(rows)
    assert not verdict.ok and verdict.first_bad_seq == i + 1
    assert verdict.problem in (PROBLEMS["prev"], PROBLEMS["edited"])


@given(data=st.data(), n=st.integers(2, 30))
def test_reorder_is_detected(data: st.DataObject, n: int) -> None:
    rows = make_chain(n)
    i = data.draw(st.integers(0, n - 2))
    j = data.draw(st.integers(i + 1, n - 1))
    rows[i], rows[j] = rows[j], rows[i]
    verdict = verify(rows)
    assert (verdict.ok, verdict.first_bad_seq, verdict.problem) == (False, i + 1, PROBLEMS["gap"])


def test_duplicate_row_and_rows_past_the_head() -> None:
    rows = make_chain(5)
    verdict = verify([*rows[:3], rows[2], *rows[3:]])
    assert (verdict.first_bad_seq, verdict.problem) == (4, PROBLEMS["back"])
    verdict = verify(rows, head=(3, rows[2].hash))
    assert (verdict.ok, verdict.first_bad_seq, verdict.problem) == (False, 4, PROBLEMS["tail"])
    verdict = verify([], head=(5, rows[-1].hash))
    assert (verdict.ok, verdict.first_bad_seq, verdict.problem) == (False, 1, PROBLEMS["empty"])


def test_unhashable_content_counts_as_edited() -> None:
    rows = make_chain(3)
    rows[1] = dataclasses.replace(rows[1], at=rows[1].at.replace(tzinfo=None))
    assert verify(rows).first_bad_seq == 2

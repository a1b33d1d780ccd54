"""The family link: short, scoped, tamper-proof, and it expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.family.link import LinkClaims, LinkProblem, derive_key, make_link, read_link

KEY = derive_key(b"s" * 32)
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


def test_a_link_reads_back_until_it_expires_and_is_short() -> None:
    token = make_link(KEY, call_id=1234, contact_id=56, now=T0)
    assert len(f"https://cc.example/f/{token}") < 70  # fits an SMS beside the message
    claims = read_link(KEY, token, now=T0 + timedelta(hours=23))
    assert claims == LinkClaims(1234, 56, T0 + timedelta(hours=24))
    assert read_link(KEY, token, now=T0 + timedelta(hours=24)) is LinkProblem.expired


def test_changing_anything_breaks_it() -> None:
    token = make_link(KEY, call_id=7, contact_id=3, now=T0)
    _body, mac = token.rsplit(".", 1)
    other_call = make_link(KEY, call_id=8, contact_id=3, now=T0).rsplit(".", 1)[0]
    assert read_link(KEY, f"{other_call}.{mac}", now=T0) is LinkProblem.tampered  # another call's body
    assert read_link(derive_key(b"t" * 32), token, now=T0) is LinkProblem.tampered  # another server
    assert read_link(KEY, token + "x", now=T0) is LinkProblem.tampered
    for bad in ("", "a.b", "a.b.c.d.e", "ü.b.c.d", "x" * 200, "..."):
        assert read_link(KEY, bad, now=T0) is LinkProblem.malformed


@given(call_id=st.integers(1, 2**40), contact_id=st.integers(1, 2**31), flip=st.integers(0, 200))
def test_no_single_character_change_is_accepted(call_id: int, contact_id: int, flip: int) -> None:
    token = make_link(KEY, call_id=call_id, contact_id=contact_id, now=T0)
    i = flip % len(token)
    changed = token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :]
    assert isinstance(read_link(KEY, changed, now=T0), LinkProblem)
    assert read_link(KEY, token, now=T0) == LinkClaims(call_id, contact_id, T0 + timedelta(hours=24))

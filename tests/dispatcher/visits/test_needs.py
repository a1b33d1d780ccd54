"""Which orders a visit's form opens (dispatcher.visits.needs)."""

from __future__ import annotations

import pytest

from dispatcher.visits.needs import MAX_KINDS, UnknownKinds, requested_kinds

KNOWN = frozenset({"meal", "cleaning", "medical", "chat"})


def test_each_kind_once_in_the_order_chosen_the_single_field_first() -> None:
    assert requested_kinds(["cleaning", "meal", "cleaning"], "medical", KNOWN) == (
        "medical",
        "cleaning",
        "meal",
    )
    assert requested_kinds(["meal"], "meal", KNOWN) == ("meal",)
    assert requested_kinds([], None, KNOWN) == ()


def test_an_unknown_kind_refuses_the_whole_form_naming_it() -> None:
    with pytest.raises(UnknownKinds, match="massage") as exc:
        requested_kinds(["meal", "massage"], None, KNOWN)
    assert "chat, cleaning, meal, medical" in str(exc.value)
    with pytest.raises(UnknownKinds, match="taxi"):
        requested_kinds([], "taxi", KNOWN)


def test_at_most_max_kinds() -> None:
    many = {f"k{i}" for i in range(MAX_KINDS + 1)}
    with pytest.raises(UnknownKinds, match="at most"):
        requested_kinds(sorted(many), None, many)

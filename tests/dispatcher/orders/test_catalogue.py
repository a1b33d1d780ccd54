"""config/services.yaml: the shipped file is valid and covers every protocol kind; a bad
file is refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_gateway.protocol.messages import SERVICE_KINDS
from dispatcher.orders.catalogue import CatalogueError
from dispatcher.orders.catalogue_file import DEFAULT_FILE, load_catalogue


def test_the_shipped_catalogue_covers_every_kind() -> None:
    cat = load_catalogue()
    assert set(cat.kinds) == SERVICE_KINDS
    assert cat.timezone == "Asia/Shanghai"
    meal = cat.entry("meal")
    assert meal.subsidised and meal.levels.accept_within_s > 0 and meal.name_zh == "助餐"
    with pytest.raises(CatalogueError, match="unknown service kind"):
        cat.entry("taxi")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("  meal:\n", "  meal:\n    colour: red\n"), "unknown key 'kinds.meal.colour'"),
        (("timezone: Asia/Shanghai", "timezone: Mars/Base"), "unknown time zone"),
        (("  chat:\n", "  taxi:\n"), "unknown kinds"),
        (
            (
                '    offered_by: {stations: ["*"]}\n    price_cny: 0\n    unit: visit',
                "    offered_by: {}\n    price_cny: 0\n    unit: visit",
            ),
            "at least one",
        ),
        (("price_cny: 12", "price_cny: -1"), "price_cny"),
        (("accept_within_s: 900", "accept_within_s: 0"), "accept_within_s"),
    ],
)
def test_a_bad_catalogue_names_the_problem(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    text = DEFAULT_FILE.read_text(encoding="utf-8")
    assert change[0] in text
    bad = tmp_path / "services.yaml"
    bad.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(CatalogueError, match=message) as err:
        load_catalogue(bad)
    assert str(bad) in str(err.value)


def test_a_missing_kind_is_refused(tmp_path: Path) -> None:
    text = DEFAULT_FILE.read_text(encoding="utf-8")
    cut = text.index("  other:\n")
    (tmp_path / "s.yaml").write_text(text[:cut], encoding="utf-8")
    with pytest.raises(CatalogueError, match="missing kinds"):
        load_catalogue(tmp_path / "s.yaml")

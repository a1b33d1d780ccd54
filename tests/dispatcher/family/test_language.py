"""The family page's language follows the console's rule: zh* → Chinese, else English,
with the Accept-Language header's q-values deciding which language comes first."""

from __future__ import annotations

import pytest

from dispatcher.family.language import pick, preferences


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("zh-Hant-HK;q=0.7", "zh-CN"),
        ("ZH", "zh-CN"),
        ("en-GB,en;q=0.9", "en"),
        ("fr-FR,fr;q=0.9", "en"),  # neither: English, as the console does
        ("de", "en"),
        ("en;q=0.5,zh-CN;q=0.9", "zh-CN"),  # q decides, not the order written
        ("zh-CN;q=0.4, ja;q=0.8", "en"),
        ("zh;q=0, en", "en"),  # q=0: "not Chinese"
        ("en;q=0, zh", "zh-CN"),
        ("en;q=0.8, zh;q=0.8", "en"),  # equal q: the order written
        ("*, en;q=0.5", "en"),  # a wildcard says nothing
        ("zh;q=abc, en;q=0.3", "en"),  # an unreadable q is left out
        ("zh;q=7, en;q=0.3", "en"),  # so is one out of range
        (" , ;q=1, en-US ", "en"),
    ],
)
def test_the_first_preference_decides(header: str, expected: str) -> None:
    assert pick(header) == expected


@pytest.mark.parametrize("header", [None, "", "*", "*;q=0.5", "zh;q=0", ",,,", "x" * 5000])
def test_no_stated_language_is_chinese(header: str | None) -> None:
    expected = "en" if header == "x" * 5000 else "zh-CN"  # "xxx…" is a language, not Chinese
    assert pick(header) == expected


def test_the_link_s_own_lang_wins_over_the_header() -> None:
    assert pick("en-GB,en", "zh-CN") == "zh-CN"
    assert pick("zh-CN", "en") == "en"
    assert pick("zh-CN", "fr") == "en"
    assert pick("en", "") == "en"  # an empty ?lang= asks for nothing


def test_preferences_orders_by_quality_then_position() -> None:
    assert preferences("en;q=0.5, zh-CN, fr;q=0.5, de;q=0") == ["zh-cn", "en", "fr"]
    assert preferences("") == []

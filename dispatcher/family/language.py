"""Which language a family page speaks: the console's rule on the HTTP side.

The console (``browserLang`` in ``dispatcher/console/static/i18n.js``) takes the
browser's first preferred language: any ``zh*`` means Chinese, anything else English.
Here the preferences come as an ``Accept-Language`` header, so they are ordered by their
q-values first (RFC 9110 §12.5.4: a higher q first, equal q in the order written, q=0
means "not this one"). A request that states no language at all (no header, only ``*``,
or nothing readable) gets Chinese, the language of the people CareCall serves.

Pure: strings in, a language out.
"""

from __future__ import annotations

from typing import Final, Literal

Lang = Literal["zh-CN", "en"]
DEFAULT: Final[Lang] = "zh-CN"
MAX_HEADER = 1000  # characters of a header read; anything past is ignored


def _quality(params: list[str]) -> float | None:
    """The q of one range's parameters: 1 when absent, None when unreadable."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            return q if 0.0 <= q <= 1.0 else None
    return 1.0


def preferences(header: str) -> list[str]:
    """The language tags of an Accept-Language header, most wanted first, lower case;
    ``*``, q=0 and unreadable entries left out."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header[:MAX_HEADER].split(",")):
        tag, *params = item.split(";")
        tag = tag.strip().lower()
        q = _quality(params)
        if not tag or tag == "*" or q is None or q == 0.0:
            continue
        ranked.append((-q, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def pick(header: str | None, asked: str | None = None) -> Lang:
    """The page's language: ``asked`` (the ``?lang=`` of a link the page itself made)
    when it names one, else the header's first preference, zh* → zh-CN, else English."""
    wanted = (asked or "").strip().lower() or next(iter(preferences(header or "")), "")
    if not wanted:
        return DEFAULT
    return "zh-CN" if wanted.startswith("zh") else "en"

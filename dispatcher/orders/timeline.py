"""An order's audit timeline as the console shows it. Pure: the rows come from the audit
log (kinds ``order_*``, the order id in ``detail``); this decides what of each row is
shown. Phone numbers never leave: keys that hold one are dropped (a breach page names
its target ``phone:…``), and phone-like runs in free text (a note) are masked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from carecall.core.logs import mask_phone

__all__ = ["HIDDEN_KEYS", "is_order_kind", "shown_detail"]

# keys the timeline never shows: the order's own id and kind are the page's, not news;
# anything naming a phone (or a page's target, which may be one) is left out
HIDDEN_KEYS = frozenset({"order_id", "service_kind", "target"})
_MAX_DEPTH = 6


def is_order_kind(kind: str) -> bool:
    return kind.startswith("order_")


def _hidden(key: str) -> bool:
    return key in HIDDEN_KEYS or "phone" in key.lower()


def _shown(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return mask_phone(value)
    if depth >= _MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {str(k): _shown(v, depth + 1) for k, v in value.items() if not _hidden(str(k))}
    if isinstance(value, list | tuple):
        return [_shown(v, depth + 1) for v in value]
    return value


def shown_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` as the timeline shows it: without the hidden keys (at any depth) and
    with every phone-like run in text masked (13812345678 → 138****5678)."""
    out = _shown(detail, 0)
    return out if isinstance(out, dict) else {}

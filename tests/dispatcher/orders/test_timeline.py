"""What an order's timeline shows of each audit row (dispatcher.orders.timeline)."""

from __future__ import annotations

from dispatcher.orders.timeline import is_order_kind, shown_detail


def test_keys_naming_a_phone_or_a_page_target_are_dropped_at_any_depth() -> None:
    detail = {
        "order_id": 7,
        "service_kind": "meal",
        "level": "accept",
        "target": "phone:13900000001",
        "manager_phone": "13900000001",
        "page": {"Phone": "13900000001", "sent": True, "tries": [{"target": "station:cm1", "ok": False}]},
    }
    assert shown_detail(detail) == {"level": "accept", "page": {"sent": True, "tries": [{"ok": False}]}}


def test_phone_like_runs_in_text_are_masked_and_other_values_kept() -> None:
    detail = {"notes": "call +86 138-1234-5678 or 0719-8123456", "reasons": ["NEAREST_AVAILABLE"], "n": 3}
    shown = shown_detail(detail)
    assert shown["notes"] == "call +86 1**-****-5678 or 071*-***3456"
    assert shown["reasons"] == ["NEAREST_AVAILABLE"] and shown["n"] == 3
    assert detail["notes"].startswith("call +86 138-1234")  # the row itself is untouched


def test_order_kinds() -> None:
    assert is_order_kind("order_created") and is_order_kind("order_breached")
    assert not is_order_kind("visit_done") and not is_order_kind("orders")

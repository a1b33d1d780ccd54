"""Notifier plugins (dispatcher/notifications/notifiers.py)."""

from __future__ import annotations

import pytest

from dispatcher.notifications.notifiers import Message, NotifyError


async def test_webhook_notifier_posts_json_and_reports_http_errors() -> None:
    import httpx

    from dispatcher.notifications.notifiers import WebhookNotifier

    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen.append(json.loads(request.content))
        return httpx.Response(200 if len(seen) == 1 else 503, text="busy")

    n = WebhookNotifier("http://bridge.invalid/notify")
    n._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    msg = Message(
        notification_id=7, call_id=3, purpose="notify_contact", target="phone:139", body={"name": "王强"}
    )
    assert await n.send(msg) == "HTTP 200"
    with pytest.raises(NotifyError, match="503"):
        await n.send(msg)
    assert seen[0]["target"] == "phone:139" and seen[0]["body"] == {"name": "王强"}
    await n.close()

"""Group robots of the station duty groups: WeCom (企业微信群机器人), DingTalk (钉钉自定义机器人,
加签) and Feishu (飞书自定义机器人, 签名校验), posting each vendor's documented JSON to the
group's webhook.

Why not ``apprise``: its WeCom/DingTalk/Feishu plugins post to the vendors' fixed hosts
(the URL is a class constant, so no local server or private deployment can stand in), its
Feishu plugin cannot sign, and it answers only True/False: the vendor's ``errcode`` (sign
mismatch, rate limit, keyword filter) is lost, and with it the receipt's status and
whether a retry can help. The three protocols are a JSON POST each; see
docs/notifications.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from dispatcher.notifications.channels.base import ReceiptClock
from dispatcher.notifications.channels.config import RobotConfig, read_secret
from dispatcher.notifications.channels.models import ChannelKind, DeliveryReceipt, Notice, ReceiptStatus

log = structlog.get_logger("carecall.notify.channels")

# errcodes that a retry after a short wait may pass (the robots allow ~20 messages a minute)
_THROTTLE = {
    "dingtalk": {130101},  # send too fast, exceed 20 times per minute
    "wecom": {45009, 45033},  # api freq out of limit
    "feishu": {9499, 11232},  # too many requests / frequency limited
}


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk 加签: base64(HMAC-SHA256(key=secret, msg="<timestamp>\\n<secret>"))."""
    mac = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def feishu_sign(secret: str, timestamp_s: str) -> str:
    """Feishu 签名校验: base64(HMAC-SHA256(key="<timestamp>\\n<secret>", msg=""))."""
    mac = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class _Group:
    def __init__(self, url: str, secret: str | None) -> None:
        self.url = url
        self.secret = secret


class RobotChannel:
    kind = ChannelKind.robot

    def __init__(self, name: str, cfg: RobotConfig, env: Mapping[str, str]) -> None:
        self.name = name
        self.cfg = cfg
        self.vendor = cfg.type
        what = f"channel {name}"
        self._groups = {
            key: _Group(
                read_secret(env, group.webhook_url_env, what),
                read_secret(env, group.secret_env, what) if group.secret_env else None,
            )
            for key, group in cfg.groups.items()
        }
        self._client = httpx.AsyncClient(timeout=cfg.timeout_s, follow_redirects=False)

    def _request(self, group: _Group, notice: Notice) -> tuple[str, dict[str, Any]]:
        text = notice.text
        if self.vendor == "wecom":
            wecom: dict[str, Any] = {"content": text}
            if self.cfg.mention_all:
                wecom["mentioned_list"] = ["@all"]
            return group.url, {"msgtype": "text", "text": wecom}
        if self.vendor == "dingtalk":
            url = group.url
            if group.secret:
                timestamp = str(int(time.time() * 1000))
                query = urllib.parse.urlencode(
                    {"timestamp": timestamp, "sign": dingtalk_sign(group.secret, timestamp)}
                )
                url = f"{url}{'&' if '?' in url else '?'}{query}"
            return url, {
                "msgtype": "text",
                "text": {"content": text},
                "at": {"isAtAll": self.cfg.mention_all},
            }
        body: dict[str, Any] = {"msg_type": "text", "content": {"text": text}}
        if group.secret:
            timestamp = str(int(time.time()))
            body |= {"timestamp": timestamp, "sign": feishu_sign(group.secret, timestamp)}
        return group.url, body

    async def send(self, notice: Notice) -> DeliveryReceipt:
        clock = ReceiptClock(self.name, self.kind, self.vendor)
        key = notice.recipient.group or self.cfg.default_group
        if key is None:
            return clock.rejected_locally("no_address", "the recipient names no robot group")
        group = self._groups.get(key)
        if group is None:
            return clock.rejected_locally("unknown_group", f"robot group {key!r} is not configured")
        url, body = self._request(group, notice)
        try:
            response = await self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            receipt = clock.receipt(
                ReceiptStatus.failed,
                retryable=True,
                error_code="network_error",
                error_message=type(exc).__name__,
            )
        else:
            receipt = self._from_response(clock, response)
        log.info("robot", channel=self.name, group=key, status=receipt.status.value, code=receipt.error_code)
        return receipt

    def _from_response(self, clock: ReceiptClock, response: httpx.Response) -> DeliveryReceipt:
        if response.status_code == 429:
            return clock.receipt(ReceiptStatus.throttled, retryable=True, error_code="http_429")
        if response.status_code >= 500:
            return clock.receipt(
                ReceiptStatus.failed, retryable=True, error_code=f"http_{response.status_code}"
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            status = ReceiptStatus.rejected if response.status_code >= 400 else ReceiptStatus.failed
            return clock.receipt(
                status, error_code=f"http_{response.status_code}", error_message=response.text[:200]
            )
        # WeCom and DingTalk: errcode/errmsg; Feishu: code/msg (older: StatusCode/StatusMessage)
        raw = data.get("errcode", data.get("code", data.get("StatusCode", -1)))
        message = str(data.get("errmsg", data.get("msg", data.get("StatusMessage", ""))))
        try:
            code = int(str(raw))
        except ValueError:
            code = -1
        request_id = response.headers.get("X-Tt-Logid") or response.headers.get("x-request-id")
        if code == 0 and response.status_code < 400:
            return clock.receipt(ReceiptStatus.delivered, request_id=request_id)
        if code in _THROTTLE[self.vendor]:
            return clock.receipt(
                ReceiptStatus.throttled,
                retryable=True,
                request_id=request_id,
                error_code=str(code),
                error_message=message,
            )
        return clock.receipt(
            ReceiptStatus.rejected, request_id=request_id, error_code=str(code), error_message=message
        )

    async def aclose(self) -> None:
        await self._client.aclose()

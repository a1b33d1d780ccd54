"""Alibaba Cloud SMS (``SendSms``) and voice notification (``SingleCallByTts``) through the
official SDKs ``alibabacloud-dysmsapi20170525`` and ``alibabacloud-dyvmsapi20170525``.

The SDKs sign with ACS3-HMAC-SHA256 (V3 signature) and call ``endpoint`` over
``protocol``; both are configurable, so tests run them against a local server that checks
the signature. The SDK's own retries are off (its default): our policy retries.

Business errors come back as HTTP 200 with ``Code`` other than ``OK``; signature, auth
and flow-control errors of the gateway as HTTP 4xx, which the SDK raises. Both map to a
receipt by ``classify``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from alibabacloud_dysmsapi20170525 import models as sms_models
from alibabacloud_dysmsapi20170525.client import Client as SmsClient
from alibabacloud_dyvmsapi20170525 import models as vms_models
from alibabacloud_dyvmsapi20170525.client import Client as VmsClient
from alibabacloud_tea_openapi import utils_models as open_api_models
from darabonba.exceptions import ResponseException, UnretryableException

from dispatcher.notifications.channels.base import ReceiptClock, log_phone_receipt, phone_call_inputs
from dispatcher.notifications.channels.config import AliyunSmsConfig, AliyunVoiceConfig, read_secret
from dispatcher.notifications.channels.models import ChannelKind, DeliveryReceipt, Notice, ReceiptStatus

PROVIDER = "aliyun"

# Per-number and per-account limits: waiting seconds will not lift them, the next
# channel is tried at once.
_THROTTLED_FINAL = frozenset(
    {
        "isv.BUSINESS_LIMIT_CONTROL",
        "isv.DAY_LIMIT_CONTROL",
        "isv.MONTH_LIMIT_CONTROL",
        "isv.EXTEND_CODE_ERROR",
    }
)
# The gateway's API rate limit: a retry after a backoff may pass.
_THROTTLED_RETRY = frozenset({"Throttling", "Throttling.User", "Throttling.Api", "Throttling.Concurrent"})
_ACCOUNT = frozenset({"isv.AMOUNT_NOT_ENOUGH", "isv.OUT_OF_SERVICE", "isv.PRODUCT_UN_SUBSCRIPT"})
_AUTH = (
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "IncompleteSignature",
    "InvalidTimeStamp",
    "SignatureNonceUsed",
    "Forbidden",
    "isp.RAM_PERMISSION_DENY",
    "isv.ACCOUNT_ABNORMAL",
)


def classify(code: str, http_status: int | None = None) -> tuple[ReceiptStatus, bool]:
    """(status, retryable) for an Alibaba Cloud error code."""
    if code == "OK":
        return ReceiptStatus.delivered, False
    if code in _THROTTLED_FINAL:
        return ReceiptStatus.throttled, False
    if code in _THROTTLED_RETRY or code.startswith("Throttling"):
        return ReceiptStatus.throttled, True
    if code in _ACCOUNT:
        return ReceiptStatus.failed, False
    if code.startswith(_AUTH):
        return ReceiptStatus.rejected, False
    if code.startswith("isp.") or code in {"InternalError", "ServiceUnavailable"}:
        return ReceiptStatus.failed, True
    if code.startswith("isv.") or code.startswith(("Invalid", "Missing")):
        return ReceiptStatus.rejected, False
    if http_status is not None and http_status >= 500:
        return ReceiptStatus.failed, True
    return ReceiptStatus.failed, False


def aliyun_number(e164: str) -> str:
    """Alibaba takes mainland numbers without +86, others as country code and number."""
    return e164[3:] if e164.startswith("+86") else e164.lstrip("+")


def _sdk_config(
    cfg: AliyunSmsConfig | AliyunVoiceConfig, env: Mapping[str, str], what: str
) -> open_api_models.Config:
    return open_api_models.Config(
        access_key_id=read_secret(env, cfg.access_key_id_env, what),
        access_key_secret=read_secret(env, cfg.access_key_secret_env, what),
        region_id=cfg.region_id,
        endpoint=cfg.endpoint,
        protocol=cfg.protocol.upper(),
        read_timeout=int(cfg.timeout_s * 1000),
        connect_timeout=int(min(cfg.timeout_s, 3.0) * 1000),
    )


class _AliyunChannel:
    kind: ChannelKind

    def __init__(self, name: str) -> None:
        self.name = name

    def _from_body(
        self,
        clock: ReceiptClock,
        code: str | None,
        message: str | None,
        request_id: str | None,
        provider_id: str | None,
    ) -> DeliveryReceipt:
        code = code or "NoCode"
        status, retryable = classify(code)
        if status is ReceiptStatus.delivered:
            return clock.receipt(status, provider_id=provider_id, request_id=request_id)
        return clock.receipt(
            status, retryable=retryable, request_id=request_id, error_code=code, error_message=message
        )

    def _from_exception(self, clock: ReceiptClock, exc: Exception) -> DeliveryReceipt:
        if isinstance(exc, ResponseException):
            code = str(exc.code or "NoCode")
            status, retryable = classify(code, exc.status_code)
            data: Any = exc.data if isinstance(exc.data, dict) else {}
            return clock.receipt(
                status,
                retryable=retryable,
                request_id=str(data.get("RequestId") or "") or None,
                error_code=code,
                error_message=str(data.get("Message") or exc.message or ""),
                retry_after_s=(exc.retry_after / 1000) if exc.retry_after else None,
            )
        inner = exc.inner_exception if isinstance(exc, UnretryableException) else exc
        return clock.receipt(
            ReceiptStatus.failed,
            retryable=True,
            error_code="network_error",
            error_message=f"{type(inner).__name__}: {inner}"[:300],
        )

    async def aclose(self) -> None:
        return None  # the SDK opens one HTTP session per request


class AliyunSmsChannel(_AliyunChannel):
    kind = ChannelKind.sms

    def __init__(self, name: str, cfg: AliyunSmsConfig, env: Mapping[str, str]) -> None:
        super().__init__(name)
        self.cfg = cfg
        self._client = SmsClient(_sdk_config(cfg, env, f"channel {name}"))

    async def send(self, notice: Notice) -> DeliveryReceipt:
        clock = ReceiptClock(self.name, self.kind, PROVIDER)
        inputs = phone_call_inputs(clock, notice, self.cfg.templates)
        if isinstance(inputs, DeliveryReceipt):
            return inputs
        phone, template = inputs
        request = sms_models.SendSmsRequest(
            phone_numbers=aliyun_number(phone),
            sign_name=self.cfg.sign_name,
            template_code=template.code,
            template_param=json.dumps(template.named, ensure_ascii=False),
            out_id=notice.notice_id,
        )
        try:
            response = await self._client.send_sms_async(request)
        except Exception as exc:
            receipt = self._from_exception(clock, exc)
        else:
            body = response.body
            receipt = self._from_body(clock, body.code, body.message, body.request_id, body.biz_id)
        log_phone_receipt("aliyun sms", self.name, phone, receipt)
        return receipt


class AliyunVoiceChannel(_AliyunChannel):
    kind = ChannelKind.voice

    def __init__(self, name: str, cfg: AliyunVoiceConfig, env: Mapping[str, str]) -> None:
        super().__init__(name)
        self.cfg = cfg
        self._client = VmsClient(_sdk_config(cfg, env, f"channel {name}"))

    async def send(self, notice: Notice) -> DeliveryReceipt:
        clock = ReceiptClock(self.name, self.kind, PROVIDER)
        inputs = phone_call_inputs(clock, notice, self.cfg.templates)
        if isinstance(inputs, DeliveryReceipt):
            return inputs
        phone, template = inputs
        request = vms_models.SingleCallByTtsRequest(
            called_number=aliyun_number(phone),
            called_show_number=self.cfg.called_show_number,
            tts_code=template.code,
            tts_param=json.dumps(template.named, ensure_ascii=False),
            play_times=self.cfg.play_times,
            volume=self.cfg.volume,
            speed=self.cfg.speed,
            out_id=notice.notice_id,
        )
        try:
            response = await self._client.single_call_by_tts_async(request)
        except Exception as exc:
            receipt = self._from_exception(clock, exc)
        else:
            body = response.body
            receipt = self._from_body(clock, body.code, body.message, body.request_id, body.call_id)
        log_phone_receipt("aliyun voice", self.name, phone, receipt)
        return receipt

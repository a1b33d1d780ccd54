"""Tencent Cloud SMS (``SendSms`` 2021-01-11) and voice messages (``SendTtsVoice``
2020-09-02) through the official SDKs ``tencentcloud-sdk-python-sms`` and
``tencentcloud-sdk-python-vms``.

Both sign with TC3-HMAC-SHA256 and call ``endpoint`` over ``protocol`` (configurable, so
tests point them at a local server that checks the signature). The SMS package ships an
asyncio client (httpx); the voice package only a blocking one (requests), which runs in a
worker thread bounded by ``timeout_s``.

A whole request that fails comes back as ``Response.Error`` (the SDK raises it); a
request that passes can still fail per number, in ``SendStatusSet[].Code``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import requests
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models as sms_models
from tencentcloud.sms.v20210111.sms_client_async import SmsClient
from tencentcloud.vms.v20200902 import models as vms_models
from tencentcloud.vms.v20200902.vms_client import VmsClient

from dispatcher.notifications.channels.base import ReceiptClock, log_phone_receipt, phone_call_inputs
from dispatcher.notifications.channels.config import TencentSmsConfig, TencentVoiceConfig, read_secret
from dispatcher.notifications.channels.models import ChannelKind, DeliveryReceipt, Notice, ReceiptStatus

PROVIDER = "tencent"

# API-wide rate limits: a retry after a backoff may pass.
_THROTTLED_RETRY = frozenset({"RequestLimitExceeded", "LimitExceeded.GlobalSmsSendingRateLimit"})
_NETWORK = frozenset({"ClientNetworkError", "ServerNetworkError"})


def classify(code: str) -> tuple[ReceiptStatus, bool]:
    """(status, retryable) for a Tencent Cloud error code (``Ok`` is success)."""
    if code in {"Ok", "OK"}:
        return ReceiptStatus.delivered, False
    if code in _THROTTLED_RETRY or code.startswith("RequestLimitExceeded"):
        return ReceiptStatus.throttled, True
    if code.startswith("LimitExceeded."):
        # per number / per app / per day limits: not lifted by waiting seconds
        return ReceiptStatus.throttled, False
    if code in _NETWORK or code.startswith(("InternalError", "FailedOperation.AccessUpstreamTimeout")):
        return ReceiptStatus.failed, True
    if code in {
        "FailedOperation.InsufficientBalanceInSmsPackage",
        "FailedOperation.InsufficientBalanceInVoicePackage",
        "UnauthorizedOperation.ServiceSuspendDueToArrears",
    }:
        return ReceiptStatus.failed, False
    if code.startswith(
        (
            "AuthFailure",
            "FailedOperation.",
            "InvalidParameter",
            "MissingParameter",
            "UnauthorizedOperation",
            "UnsupportedOperation",
            "InvalidAction",
            "UnknownParameter",
        )
    ):
        return ReceiptStatus.rejected, False
    return ReceiptStatus.failed, False


def _profile(cfg: TencentSmsConfig | TencentVoiceConfig) -> ClientProfile:
    http = HttpProfile(
        protocol=cfg.protocol,
        endpoint=cfg.endpoint,  # None: the SDK's own <service>.tencentcloudapi.com
        reqTimeout=int(max(1, round(cfg.timeout_s))),
    )
    return ClientProfile(httpProfile=http, disable_region_breaker=True)


def _credential(
    cfg: TencentSmsConfig | TencentVoiceConfig, env: Mapping[str, str], what: str
) -> credential.Credential:
    return credential.Credential(
        read_secret(env, cfg.secret_id_env, what), read_secret(env, cfg.secret_key_env, what)
    )


def _from_exception(clock: ReceiptClock, exc: Exception) -> DeliveryReceipt:
    if isinstance(exc, TencentCloudSDKException):
        code = str(exc.code or "NoCode")
        status, retryable = classify(code)
        message = exc.message if isinstance(exc.message, str) else repr(exc.message)[:300]
        return clock.receipt(
            status, retryable=retryable, request_id=exc.requestId, error_code=code, error_message=message
        )
    return clock.receipt(
        ReceiptStatus.failed,
        retryable=True,
        error_code="network_error",
        error_message=f"{type(exc).__name__}: {exc}"[:300],
    )


class TencentSmsChannel:
    kind = ChannelKind.sms

    def __init__(self, name: str, cfg: TencentSmsConfig, env: Mapping[str, str]) -> None:
        self.name = name
        self.cfg = cfg
        self._client = SmsClient(_credential(cfg, env, f"channel {name}"), cfg.region, _profile(cfg))

    async def send(self, notice: Notice) -> DeliveryReceipt:
        clock = ReceiptClock(self.name, self.kind, PROVIDER)
        inputs = phone_call_inputs(clock, notice, self.cfg.templates)
        if isinstance(inputs, DeliveryReceipt):
            return inputs
        phone, template = inputs
        request = sms_models.SendSmsRequest()
        request.PhoneNumberSet = [phone]
        request.SmsSdkAppId = self.cfg.sms_sdk_app_id
        request.SignName = self.cfg.sign_name
        request.TemplateId = template.code
        request.TemplateParamSet = template.ordered
        request.SessionContext = notice.notice_id
        try:
            response = await self._client.SendSms(request)
        except (TencentCloudSDKException, httpx.HTTPError, OSError) as exc:
            receipt = _from_exception(clock, exc)
        else:
            statuses = response.SendStatusSet or []
            if not statuses:
                receipt = clock.receipt(
                    ReceiptStatus.failed,
                    retryable=True,
                    request_id=response.RequestId,
                    error_code="no_status",
                    error_message="no SendStatusSet in the answer",
                )
            else:
                one = statuses[0]
                code = str(one.Code or "NoCode")
                status, retryable = classify(code)
                receipt = clock.receipt(
                    status,
                    retryable=retryable,
                    provider_id=one.SerialNo,
                    request_id=response.RequestId,
                    error_code=None if status is ReceiptStatus.delivered else code,
                    error_message=None if status is ReceiptStatus.delivered else one.Message,
                )
        log_phone_receipt("tencent sms", self.name, phone, receipt)
        return receipt

    async def aclose(self) -> None:
        await self._client.close()


class TencentVoiceChannel:
    kind = ChannelKind.voice

    def __init__(self, name: str, cfg: TencentVoiceConfig, env: Mapping[str, str]) -> None:
        self.name = name
        self.cfg = cfg
        self._client = VmsClient(_credential(cfg, env, f"channel {name}"), cfg.region, _profile(cfg))

    async def send(self, notice: Notice) -> DeliveryReceipt:
        clock = ReceiptClock(self.name, self.kind, PROVIDER)
        inputs = phone_call_inputs(clock, notice, self.cfg.templates)
        if isinstance(inputs, DeliveryReceipt):
            return inputs
        phone, template = inputs
        request = vms_models.SendTtsVoiceRequest()
        request.TemplateId = template.code
        request.CalledNumber = phone
        request.VoiceSdkAppid = self.cfg.voice_sdk_app_id
        request.TemplateParamSet = template.ordered
        request.PlayTimes = self.cfg.play_times
        request.SessionContext = notice.notice_id
        try:
            response = await asyncio.to_thread(self._client.SendTtsVoice, request)
        except (TencentCloudSDKException, requests.RequestException, OSError) as exc:
            receipt = _from_exception(clock, exc)
        else:
            call_id = response.SendStatus.CallId if response.SendStatus is not None else None
            receipt = clock.receipt(
                ReceiptStatus.delivered, provider_id=call_id, request_id=response.RequestId
            )
        log_phone_receipt("tencent voice", self.name, phone, receipt)
        return receipt

    async def aclose(self) -> None:
        return None  # the blocking client holds no connection between calls

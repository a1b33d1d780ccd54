"""Alibaba Cloud and Tencent Cloud SMS and voice through their official SDKs, against a
local server that checks each request's signature and answers as the vendor documents."""

from __future__ import annotations

import json
import socket

import pytest
import structlog

from dispatcher.notifications.channels.aliyun import AliyunSmsChannel, AliyunVoiceChannel, aliyun_number
from dispatcher.notifications.channels.config import NotificationsConfigError
from dispatcher.notifications.channels.models import ChannelKind, ReceiptStatus
from dispatcher.notifications.channels.tencent import TencentSmsChannel, TencentVoiceChannel
from tests.dispatcher.notifications.channels.conftest import (
    PHONE,
    aliyun_sms_cfg,
    aliyun_voice_cfg,
    notice,
    tencent_sms_cfg,
    tencent_voice_cfg,
)
from tests.dispatcher.notifications.channels.fakes import FakeVendors


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- Alibaba SMS ------------------------------------------------------------------------


async def test_aliyun_sms_success_sends_the_signed_template(
    vendors: FakeVendors, env: dict[str, str]
) -> None:
    channel = AliyunSmsChannel("aliyun_sms", aliyun_sms_cfg(vendors), env)
    with structlog.testing.capture_logs() as logs:
        receipt = await channel.send(notice(notice_id="n-ali-1"))
    assert receipt.status is ReceiptStatus.delivered, receipt
    assert receipt.kind is ChannelKind.sms and receipt.provider == "aliyun"
    assert receipt.provider_id and receipt.provider_id.endswith("^0")
    assert receipt.request_id and not receipt.retryable and receipt.elapsed_ms > 0
    (seen,) = vendors.of("aliyun", "SendSms")
    assert seen.params["PhoneNumbers"] == "13812345678"  # mainland: without +86
    assert seen.params["SignName"] == "关爱呼叫"
    assert seen.params["TemplateCode"] == "SMS_480000001"
    assert json.loads(seen.params["TemplateParam"]) == {"resident": "王秀英", "address": "幸福里 3-2-101"}
    assert seen.params["OutId"] == "n-ali-1"
    assert vendors.refused == []
    assert logs and "13812345678" not in repr(logs) and "138****5678" in repr(logs)


async def test_aliyun_sms_english_locale_uses_its_template(vendors: FakeVendors, env: dict[str, str]) -> None:
    channel = AliyunSmsChannel("aliyun_sms", aliyun_sms_cfg(vendors), env)
    receipt = await channel.send(notice(locale="en"))
    assert receipt.delivered
    assert vendors.of("aliyun", "SendSms")[0].params["TemplateCode"] == "SMS_480000002"


@pytest.mark.parametrize(
    ("outcome", "status", "retryable", "code"),
    [
        ("throttled", ReceiptStatus.throttled, False, "isv.BUSINESS_LIMIT_CONTROL"),
        ("bad_template", ReceiptStatus.rejected, False, "isv.SMS_TEMPLATE_ILLEGAL"),
        ("api_throttled", ReceiptStatus.throttled, True, "Throttling.User"),
        ("server_error", ReceiptStatus.failed, True, "InternalError"),
    ],
)
async def test_aliyun_sms_vendor_answers_map_to_receipts(
    vendors: FakeVendors, env: dict[str, str], outcome: str, status: ReceiptStatus, retryable: bool, code: str
) -> None:
    vendors.script("SendSms", outcome)
    receipt = await AliyunSmsChannel("aliyun_sms", aliyun_sms_cfg(vendors), env).send(notice())
    assert (receipt.status, receipt.retryable, receipt.error_code) == (status, retryable, code)
    assert receipt.request_id and receipt.error_message


async def test_aliyun_wrong_secret_is_refused_by_the_signature_check(
    vendors: FakeVendors, env: dict[str, str]
) -> None:
    env = {**env, "T_ALIYUN_SECRET": "not-the-secret"}
    receipt = await AliyunSmsChannel("aliyun_sms", aliyun_sms_cfg(vendors), env).send(notice())
    assert (receipt.status, receipt.retryable, receipt.error_code) == (
        ReceiptStatus.rejected,
        False,
        "SignatureDoesNotMatch",
    )
    assert vendors.refused == ["SignatureDoesNotMatch"] and vendors.of("aliyun") == []


async def test_aliyun_unreachable_endpoint_is_a_retryable_failure(
    env: dict[str, str], vendors: FakeVendors
) -> None:
    cfg = aliyun_sms_cfg(vendors).model_copy(update={"endpoint": f"127.0.0.1:{_closed_port()}"})
    receipt = await AliyunSmsChannel("aliyun_sms", cfg, env).send(notice())
    assert (receipt.status, receipt.retryable, receipt.error_code) == (
        ReceiptStatus.failed,
        True,
        "network_error",
    )


async def test_aliyun_sms_refuses_locally_without_number_or_template(
    vendors: FakeVendors, env: dict[str, str]
) -> None:
    channel = AliyunSmsChannel("aliyun_sms", aliyun_sms_cfg(vendors), env)
    no_phone = notice(recipient={"person_id": "p", "email": "a@example.com"})
    unknown = notice(template="never_configured")
    missing = notice(params={"resident": "王秀英"})
    for n, code in (
        (no_phone, "no_address"),
        (unknown, "template_not_configured"),
        (missing, "template_not_configured"),
    ):
        receipt = await channel.send(n)
        assert (receipt.status, receipt.retryable, receipt.error_code) == (
            ReceiptStatus.rejected,
            False,
            code,
        )
    assert vendors.seen == []


def test_aliyun_number_format() -> None:
    assert aliyun_number("+8613812345678") == "13812345678"
    assert aliyun_number("+85291234567") == "85291234567"


def test_missing_secret_names_the_variable(vendors: FakeVendors, env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "T_ALIYUN_SECRET"}
    with pytest.raises(NotificationsConfigError, match="T_ALIYUN_SECRET"):
        AliyunSmsChannel("aliyun_sms", aliyun_sms_cfg(vendors), env)


# --- Alibaba voice -------------------------------------------------------------------


async def test_aliyun_voice_success(vendors: FakeVendors, env: dict[str, str]) -> None:
    channel = AliyunVoiceChannel("aliyun_voice", aliyun_voice_cfg(vendors), env)
    receipt = await channel.send(notice(notice_id="n-voice-1"))
    assert receipt.status is ReceiptStatus.delivered and receipt.kind is ChannelKind.voice
    assert receipt.provider_id and receipt.provider_id.startswith("116012354148^")
    (seen,) = vendors.of("aliyun", "SingleCallByTts")
    assert seen.params["CalledNumber"] == "13812345678"
    assert seen.params["CalledShowNumber"] == "057100000000"
    assert seen.params["TtsCode"] == "TTS_480000001"
    assert json.loads(seen.params["TtsParam"])["resident"] == "王秀英"
    assert seen.params["PlayTimes"] == "3" and seen.params["OutId"] == "n-voice-1"


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [
        ("throttled", ReceiptStatus.throttled, "isv.BUSINESS_LIMIT_CONTROL"),
        ("bad_template", ReceiptStatus.rejected, "isv.TEMPLATE_ILLEGAL"),
    ],
)
async def test_aliyun_voice_errors(
    vendors: FakeVendors, env: dict[str, str], outcome: str, status: ReceiptStatus, code: str
) -> None:
    vendors.script("SingleCallByTts", outcome)
    receipt = await AliyunVoiceChannel("aliyun_voice", aliyun_voice_cfg(vendors), env).send(notice())
    assert (receipt.status, receipt.retryable, receipt.error_code) == (status, False, code)


# --- Tencent SMS ---------------------------------------------------------------------


async def test_tencent_sms_success(vendors: FakeVendors, env: dict[str, str]) -> None:
    channel = TencentSmsChannel("tencent_sms", tencent_sms_cfg(vendors), env)
    try:
        with structlog.testing.capture_logs() as logs:
            receipt = await channel.send(notice(notice_id="n-tc-1"))
    finally:
        await channel.aclose()
    assert receipt.status is ReceiptStatus.delivered, receipt
    assert receipt.provider == "tencent" and receipt.provider_id and receipt.request_id
    (seen,) = vendors.of("tencent", "sms:SendSms")
    assert seen.params["PhoneNumberSet"] == [PHONE]  # E.164 with +86
    assert seen.params["SmsSdkAppId"] == "1400000001" and seen.params["SignName"] == "关爱呼叫"
    assert seen.params["TemplateId"] == "2000001"
    assert seen.params["TemplateParamSet"] == ["王秀英", "幸福里 3-2-101"]  # in the configured order
    assert seen.params["SessionContext"] == "n-tc-1"
    assert "13812345678" not in repr(logs)


@pytest.mark.parametrize(
    ("outcome", "status", "retryable", "code"),
    [
        ("throttled", ReceiptStatus.throttled, False, "LimitExceeded.PhoneNumberDailyLimit"),
        ("bad_template", ReceiptStatus.rejected, False, "FailedOperation.TemplateIncorrectOrUnapproved"),
        ("api_throttled", ReceiptStatus.throttled, True, "RequestLimitExceeded"),
    ],
)
async def test_tencent_sms_vendor_answers_map_to_receipts(
    vendors: FakeVendors, env: dict[str, str], outcome: str, status: ReceiptStatus, retryable: bool, code: str
) -> None:
    vendors.script("tencent:sms:SendSms", outcome)
    channel = TencentSmsChannel("tencent_sms", tencent_sms_cfg(vendors), env)
    try:
        receipt = await channel.send(notice())
    finally:
        await channel.aclose()
    assert (receipt.status, receipt.retryable, receipt.error_code) == (status, retryable, code)
    assert receipt.request_id and receipt.error_message


async def test_tencent_wrong_key_is_refused_by_the_signature_check(
    vendors: FakeVendors, env: dict[str, str]
) -> None:
    channel = TencentSmsChannel("tencent_sms", tencent_sms_cfg(vendors), {**env, "T_TENCENT_KEY": "wrong"})
    try:
        receipt = await channel.send(notice())
    finally:
        await channel.aclose()
    assert (receipt.status, receipt.retryable, receipt.error_code) == (
        ReceiptStatus.rejected,
        False,
        "AuthFailure.SignatureFailure",
    )
    assert vendors.refused == ["AuthFailure.SignatureFailure"] and vendors.of("tencent") == []


async def test_tencent_unreachable_endpoint_is_a_retryable_failure(
    vendors: FakeVendors, env: dict[str, str]
) -> None:
    cfg = tencent_sms_cfg(vendors).model_copy(update={"endpoint": f"127.0.0.1:{_closed_port()}"})
    channel = TencentSmsChannel("tencent_sms", cfg, env)
    try:
        receipt = await channel.send(notice())
    finally:
        await channel.aclose()
    assert (receipt.status, receipt.retryable) == (ReceiptStatus.failed, True)


# --- Tencent voice -------------------------------------------------------------------


async def test_tencent_voice_success_and_errors(vendors: FakeVendors, env: dict[str, str]) -> None:
    channel = TencentVoiceChannel("tencent_voice", tencent_voice_cfg(vendors), env)
    ok = await channel.send(notice(notice_id="n-tv-1"))
    assert ok.status is ReceiptStatus.delivered and ok.kind is ChannelKind.voice and ok.provider_id
    (seen,) = vendors.of("tencent", "vms:SendTtsVoice")
    assert seen.params["CalledNumber"] == PHONE and seen.params["VoiceSdkAppid"] == "1400000002"
    assert seen.params["TemplateId"] == "3000001" and seen.params["TemplateParamSet"] == [
        "王秀英",
        "幸福里 3-2-101",
    ]
    assert seen.params["PlayTimes"] == 2 and seen.params["SessionContext"] == "n-tv-1"

    vendors.script("tencent:vms:SendTtsVoice", "bad_template", "throttled")
    bad = await channel.send(notice())
    assert (bad.status, bad.retryable, bad.error_code) == (
        ReceiptStatus.rejected,
        False,
        "FailedOperation.TemplateIncorrectOrUnapproved",
    )
    limited = await channel.send(notice())
    assert (limited.status, limited.retryable, limited.error_code) == (
        ReceiptStatus.throttled,
        False,
        "LimitExceeded.DeliveryFrequencyLimit",
    )
    await channel.aclose()


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("OK", ReceiptStatus.delivered, False),
        ("isv.BUSINESS_LIMIT_CONTROL", ReceiptStatus.throttled, False),
        ("isv.DAY_LIMIT_CONTROL", ReceiptStatus.throttled, False),
        ("Throttling.User", ReceiptStatus.throttled, True),
        ("isv.SMS_TEMPLATE_ILLEGAL", ReceiptStatus.rejected, False),
        ("isv.MOBILE_NUMBER_ILLEGAL", ReceiptStatus.rejected, False),
        ("SignatureDoesNotMatch", ReceiptStatus.rejected, False),
        ("InvalidAccessKeyId.NotFound", ReceiptStatus.rejected, False),
        ("isv.AMOUNT_NOT_ENOUGH", ReceiptStatus.failed, False),
        ("isp.SYSTEM_ERROR", ReceiptStatus.failed, True),
    ],
)
def test_aliyun_code_table(code: str, status: ReceiptStatus, retryable: bool) -> None:
    from dispatcher.notifications.channels.aliyun import classify

    assert classify(code) == (status, retryable)


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("Ok", ReceiptStatus.delivered, False),
        ("LimitExceeded.PhoneNumberDailyLimit", ReceiptStatus.throttled, False),
        ("LimitExceeded.PhoneNumberThirtySecondLimit", ReceiptStatus.throttled, False),
        ("LimitExceeded.GlobalSmsSendingRateLimit", ReceiptStatus.throttled, True),
        ("RequestLimitExceeded", ReceiptStatus.throttled, True),
        ("FailedOperation.TemplateIncorrectOrUnapproved", ReceiptStatus.rejected, False),
        ("InvalidParameterValue.IncorrectPhoneNumber", ReceiptStatus.rejected, False),
        ("AuthFailure.SignatureExpire", ReceiptStatus.rejected, False),
        ("FailedOperation.InsufficientBalanceInSmsPackage", ReceiptStatus.failed, False),
        ("InternalError.Timeout", ReceiptStatus.failed, True),
        ("FailedOperation.AccessUpstreamTimeout", ReceiptStatus.failed, True),
        ("ClientNetworkError", ReceiptStatus.failed, True),
    ],
)
def test_tencent_code_table(code: str, status: ReceiptStatus, retryable: bool) -> None:
    from dispatcher.notifications.channels.tencent import classify

    assert classify(code) == (status, retryable)

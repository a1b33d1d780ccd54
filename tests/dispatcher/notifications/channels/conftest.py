"""Fixtures: the local fake vendors, credentials in a private environment mapping, and
channel configs pointed at the fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dispatcher.notifications.channels.config import (
    AliyunSmsConfig,
    AliyunVoiceConfig,
    HttpSmsConfig,
    RobotConfig,
    RobotGroup,
    TencentSmsConfig,
    TencentVoiceConfig,
    VendorTemplate,
)
from dispatcher.notifications.channels.models import Notice, Purpose, Recipient
from tests.dispatcher.notifications.channels.fakes import (
    ALIYUN_KEYS,
    DINGTALK,
    FEISHU,
    GATEWAY_SECRET,
    TENCENT_KEYS,
    WECOM_KEY,
    FakeVendors,
    start_fake_vendors,
)

PHONE = "+8613812345678"


@pytest.fixture
async def vendors() -> AsyncIterator[FakeVendors]:
    fake, runner = await start_fake_vendors()
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
def env(vendors: FakeVendors) -> dict[str, str]:
    ((ak, ak_secret),) = ALIYUN_KEYS.items()
    ((sid, skey),) = TENCENT_KEYS.items()
    return {
        "T_ALIYUN_AK": ak,
        "T_ALIYUN_SECRET": ak_secret,
        "T_TENCENT_ID": sid,
        "T_TENCENT_KEY": skey,
        "T_GATEWAY_SECRET": GATEWAY_SECRET,
        "T_DING_URL": f"{vendors.base_url}/robot/send?access_token={DINGTALK['token']}",
        "T_DING_SECRET": DINGTALK["secret"],
        "T_FEISHU_URL": f"{vendors.base_url}/open-apis/bot/v2/hook/{FEISHU['hook']}",
        "T_FEISHU_SECRET": FEISHU["secret"],
        "T_WECOM_URL": f"{vendors.base_url}/cgi-bin/webhook/send?key={WECOM_KEY}",
    }


TEMPLATES = {
    "sos_page": VendorTemplate(
        code="SMS_480000001", params=["resident", "address"], code_by_locale={"en": "SMS_480000002"}
    ),
}
VOICE_TEMPLATES = {"sos_page": VendorTemplate(code="TTS_480000001", params=["resident", "address"])}


def aliyun_sms_cfg(vendors: FakeVendors) -> AliyunSmsConfig:
    return AliyunSmsConfig(
        type="aliyun_sms",
        access_key_id_env="T_ALIYUN_AK",
        access_key_secret_env="T_ALIYUN_SECRET",
        endpoint=vendors.host,
        protocol="http",
        sign_name="关爱呼叫",
        timeout_s=3,
        templates=TEMPLATES,
    )


def aliyun_voice_cfg(vendors: FakeVendors) -> AliyunVoiceConfig:
    return AliyunVoiceConfig(
        type="aliyun_voice",
        access_key_id_env="T_ALIYUN_AK",
        access_key_secret_env="T_ALIYUN_SECRET",
        endpoint=vendors.host,
        protocol="http",
        called_show_number="057100000000",
        timeout_s=3,
        templates=VOICE_TEMPLATES,
    )


def tencent_sms_cfg(vendors: FakeVendors) -> TencentSmsConfig:
    return TencentSmsConfig(
        type="tencent_sms",
        secret_id_env="T_TENCENT_ID",
        secret_key_env="T_TENCENT_KEY",
        endpoint=vendors.host,
        protocol="http",
        sms_sdk_app_id="1400000001",
        sign_name="关爱呼叫",
        timeout_s=3,
        templates={"sos_page": VendorTemplate(code="2000001", params=["resident", "address"])},
    )


def tencent_voice_cfg(vendors: FakeVendors) -> TencentVoiceConfig:
    return TencentVoiceConfig(
        type="tencent_voice",
        secret_id_env="T_TENCENT_ID",
        secret_key_env="T_TENCENT_KEY",
        endpoint=vendors.host,
        protocol="http",
        voice_sdk_app_id="1400000002",
        timeout_s=3,
        templates={"sos_page": VendorTemplate(code="3000001", params=["resident", "address"])},
    )


def gateway_cfg(vendors: FakeVendors) -> HttpSmsConfig:
    return HttpSmsConfig(
        type="http_sms", url=f"{vendors.base_url}/gateway", hmac_secret_env="T_GATEWAY_SECRET", timeout_s=3
    )


def robot_cfg(vendor: str) -> RobotConfig:
    groups = {
        "dingtalk": RobotGroup(webhook_url_env="T_DING_URL", secret_env="T_DING_SECRET"),
        "feishu": RobotGroup(webhook_url_env="T_FEISHU_URL", secret_env="T_FEISHU_SECRET"),
        "wecom": RobotGroup(webhook_url_env="T_WECOM_URL"),
    }
    return RobotConfig.model_validate(
        {
            "type": vendor,
            "groups": {"station-1": groups[vendor]},
            "default_group": "station-1",
            "mention_all": True,
            "timeout_s": 3,
        }
    )


def notice(**overrides: object) -> Notice:
    data: dict[str, object] = {
        "purpose": Purpose.page,
        "recipient": Recipient(
            person_id="staff-7", phone=PHONE, email="wang.li@example.com", group="station-1"
        ),
        "call_id": 42,
        "template": "sos_page",
        "params": {"resident": "王秀英", "address": "幸福里 3-2-101"},
        "text": "SOS: 王秀英, 幸福里 3-2-101. Please answer in the app.",
    }
    data.update(overrides)
    return Notice.model_validate(data)

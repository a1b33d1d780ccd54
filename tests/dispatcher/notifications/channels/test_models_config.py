"""Notice validation, masking, and config/notifications.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from config import CONFIG_DIR
from dispatcher.notifications.channels import (
    NotificationsConfigError,
    Purpose,
    ReceiptStatus,
    build_channels,
    channel_order,
    close_all,
    load_notifications_config,
)
from dispatcher.notifications.channels.masking import mask_email, mask_phone, scrub
from dispatcher.notifications.channels.models import Channel, ChannelKind, DeliveryReceipt, Recipient
from tests.dispatcher.notifications.channels.conftest import notice


def test_phone_numbers_are_normalised_and_checked() -> None:
    assert Recipient(phone="138 1234 5678").phone == "+8613812345678"
    assert Recipient(phone="+85291234567").phone == "+85291234567"
    for bad in ("12345", "+0123456789", "phone"):
        with pytest.raises(ValidationError):
            Recipient(phone=bad)
    with pytest.raises(ValidationError):
        Recipient(email="not-an-address")


def test_addresses_stay_out_of_reprs_and_masked_labels() -> None:
    n = notice()
    assert "13812345678" not in repr(n) and "wang.li" not in repr(n)
    label = n.recipient.masked()
    assert "+86138****5678" in label and "w***@example.com" in label and "13812345678" not in label


def test_masking() -> None:
    assert mask_phone("+8613812345678") == "+86138****5678"
    assert mask_phone("13812345678") == "138****5678"
    assert mask_email("wang.li@example.com") == "w***@example.com"
    assert scrub("to 13812345678 and +8613912345678 / a.b@c.cn, id 20261206123456789") == (
        "to 138****5678 and +86139****5678 / a***@c.cn, id 20261206123456789"
    )


def test_receipts_never_keep_a_number_in_the_error_message() -> None:
    receipt = DeliveryReceipt(
        channel="c",
        kind=ChannelKind.sms,
        status=ReceiptStatus.rejected,
        provider="p",
        error_message="number 13812345678 is blacklisted",
        elapsed_ms=1,
    )
    assert receipt.error_message == "number 138****5678 is blacklisted"


def test_notice_rejects_bad_params() -> None:
    with pytest.raises(ValidationError):
        notice(params={"1bad": "x"})
    with pytest.raises(ValidationError):
        notice(params={"ok": "x" * 201})
    with pytest.raises(ValidationError):
        notice(unknown_field=1)


def test_the_example_config_loads() -> None:
    path = CONFIG_DIR / "notifications.yaml"
    cfg = load_notifications_config(path)
    assert set(cfg.routing) == set(Purpose)
    assert cfg.channels["aliyun_sms"].type == "aliyun_sms"


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "n.yaml"
    bad.write_text("routing:\n  page: [nowhere]\n", encoding="utf-8")
    with pytest.raises(NotificationsConfigError, match="unknown channel 'nowhere'"):
        load_notifications_config(bad)
    bad.write_text(
        "channels:\n  x: {type: aliyun_sms, access_key_id_env: lower, access_key_secret_env: B, sign_name: s}\n",
        encoding="utf-8",
    )
    with pytest.raises(NotificationsConfigError, match="access_key_id_env"):
        load_notifications_config(bad)
    bad.write_text("cost_guard: {sms_per_call: 1, sms_per_day: 3}\n", encoding="utf-8")
    with pytest.raises(NotificationsConfigError, match=r"unknown key 'cost_guard\.sms_per_day'"):
        load_notifications_config(bad)


async def test_build_channels_from_the_example_and_choose_an_order() -> None:
    cfg = load_notifications_config(CONFIG_DIR / "notifications.yaml")
    env = {
        name: "x"
        for name in (
            "CARECALL_ALIYUN_ACCESS_KEY_ID",
            "CARECALL_ALIYUN_ACCESS_KEY_SECRET",
            "CARECALL_TENCENT_SECRET_ID",
            "CARECALL_TENCENT_SECRET_KEY",
            "CARECALL_SMS_GATEWAY_SECRET",
            "CARECALL_DINGTALK_STATION_1_URL",
            "CARECALL_DINGTALK_STATION_1_SECRET",
            "CARECALL_WECOM_STATION_1_URL",
            "CARECALL_FEISHU_STATION_1_URL",
            "CARECALL_FEISHU_STATION_1_SECRET",
            "CARECALL_SMTP_USER",
            "CARECALL_SMTP_PASSWORD",
        )
    }
    channels = build_channels(cfg, env)
    try:
        assert all(isinstance(c, Channel) for c in channels.values())
        kinds = {name: c.kind for name, c in channels.items()}
        assert kinds["aliyun_voice"] is ChannelKind.voice and kinds["station_feishu"] is ChannelKind.robot
        page = channel_order(cfg, channels, Purpose.page)
        assert [c.name for c in page] == ["aliyun_sms", "tencent_sms", "aliyun_voice"]  # no app channel given
        mine = channel_order(cfg, channels, Purpose.page, person_order=["tencent_voice", "email"])
        assert [c.name for c in mine] == ["tencent_voice", "email"]
    finally:
        await close_all(channels)
    with pytest.raises(NotificationsConfigError, match="CARECALL_SMTP_PASSWORD"):
        build_channels(cfg, {k: v for k, v in env.items() if k != "CARECALL_SMTP_PASSWORD"})

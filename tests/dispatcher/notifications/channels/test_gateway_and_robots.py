"""The generic HTTP SMS gateway and the WeCom / DingTalk / Feishu robots against the local
server, which checks the HMAC header and the robots' signatures."""

from __future__ import annotations

import pytest

from dispatcher.notifications.channels.config import RobotConfig, RobotGroup
from dispatcher.notifications.channels.http_sms import HttpSmsChannel
from dispatcher.notifications.channels.models import ChannelKind, ReceiptStatus
from dispatcher.notifications.channels.robots import RobotChannel, dingtalk_sign, feishu_sign
from tests.dispatcher.notifications.channels.conftest import PHONE, gateway_cfg, notice, robot_cfg
from tests.dispatcher.notifications.channels.fakes import FakeVendors

# --- HTTP gateway ------------------------------------------------------------------


async def test_gateway_success_carries_the_signed_json(vendors: FakeVendors, env: dict[str, str]) -> None:
    channel = HttpSmsChannel("gateway_sms", gateway_cfg(vendors), env)
    try:
        receipt = await channel.send(notice(notice_id="n-gw-1"))
    finally:
        await channel.aclose()
    assert receipt.status is ReceiptStatus.delivered and receipt.provider_id == "gw-n-gw-1"
    (seen,) = vendors.of("gateway")
    assert seen.params["to"] == PHONE and seen.params["template"] == "sos_page"
    assert seen.params["params"]["resident"] == "王秀英" and seen.params["call_id"] == 42
    assert vendors.refused == []


@pytest.mark.parametrize(
    ("outcome", "status", "retryable", "code"),
    [
        ("throttled", ReceiptStatus.throttled, True, "http_429"),
        ("server_error", ReceiptStatus.failed, True, "http_503"),
        ("bad_template", ReceiptStatus.rejected, False, "http_422"),
    ],
)
async def test_gateway_answers_map_to_receipts(
    vendors: FakeVendors, env: dict[str, str], outcome: str, status: ReceiptStatus, retryable: bool, code: str
) -> None:
    vendors.script("gateway", outcome)
    channel = HttpSmsChannel("gateway_sms", gateway_cfg(vendors), env)
    try:
        receipt = await channel.send(notice())
    finally:
        await channel.aclose()
    assert (receipt.status, receipt.retryable, receipt.error_code) == (status, retryable, code)
    if outcome == "throttled":
        assert receipt.retry_after_s == pytest.approx(0.05)


async def test_gateway_wrong_secret_is_rejected(vendors: FakeVendors, env: dict[str, str]) -> None:
    channel = HttpSmsChannel("gateway_sms", gateway_cfg(vendors), {**env, "T_GATEWAY_SECRET": "other"})
    try:
        receipt = await channel.send(notice())
    finally:
        await channel.aclose()
    assert (receipt.status, receipt.error_code) == (ReceiptStatus.rejected, "http_401")
    assert vendors.refused == ["gateway-signature"]


# --- robots ------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", ["dingtalk", "feishu", "wecom"])
async def test_robot_posts_the_vendor_json(vendors: FakeVendors, env: dict[str, str], vendor: str) -> None:
    channel = RobotChannel(f"station_{vendor}", robot_cfg(vendor), env)
    try:
        receipt = await channel.send(notice(purpose="alert"))
    finally:
        await channel.aclose()
    assert receipt.status is ReceiptStatus.delivered, receipt
    assert receipt.kind is ChannelKind.robot and receipt.provider == vendor
    (seen,) = vendors.of(vendor)
    text = "SOS: 王秀英, 幸福里 3-2-101. Please answer in the app."
    if vendor == "dingtalk":
        assert seen.params == {"msgtype": "text", "text": {"content": text}, "at": {"isAtAll": True}}
    elif vendor == "feishu":
        assert seen.params["msg_type"] == "text" and seen.params["content"] == {"text": text}
    else:
        assert seen.params == {"msgtype": "text", "text": {"content": text, "mentioned_list": ["@all"]}}
    assert vendors.refused == []


@pytest.mark.parametrize(
    ("vendor", "code"), [("dingtalk", "130101"), ("feishu", "11232"), ("wecom", "45009")]
)
async def test_robot_rate_limit_is_throttled_and_retryable(
    vendors: FakeVendors, env: dict[str, str], vendor: str, code: str
) -> None:
    vendors.script(vendor, "throttled")
    channel = RobotChannel(vendor, robot_cfg(vendor), env)
    try:
        receipt = await channel.send(notice())
    finally:
        await channel.aclose()
    assert (receipt.status, receipt.retryable, receipt.error_code) == (ReceiptStatus.throttled, True, code)


@pytest.mark.parametrize(("vendor", "code"), [("dingtalk", "310000"), ("feishu", "19021")])
async def test_robot_wrong_secret_fails_the_signature_check(
    vendors: FakeVendors, env: dict[str, str], vendor: str, code: str
) -> None:
    env = {**env, "T_DING_SECRET": "SEC-wrong", "T_FEISHU_SECRET": "wrong"}
    channel = RobotChannel(vendor, robot_cfg(vendor), env)
    try:
        receipt = await channel.send(notice())
    finally:
        await channel.aclose()
    assert (receipt.status, receipt.retryable, receipt.error_code) == (ReceiptStatus.rejected, False, code)
    assert vendors.refused == [f"{vendor}-sign"]


async def test_wecom_wrong_key_and_unknown_group(vendors: FakeVendors, env: dict[str, str]) -> None:
    channel = RobotChannel("wecom", robot_cfg("wecom"), {**env, "T_WECOM_URL": env["T_WECOM_URL"] + "x"})
    try:
        wrong_key = await channel.send(notice())
        unknown = await channel.send(notice(recipient={"group": "station-99"}))
    finally:
        await channel.aclose()
    assert (wrong_key.status, wrong_key.error_code) == (ReceiptStatus.rejected, "93000")
    assert (unknown.status, unknown.error_code) == (ReceiptStatus.rejected, "unknown_group")
    no_default = RobotConfig(type="wecom", groups={"g": RobotGroup(webhook_url_env="T_WECOM_URL")})
    channel = RobotChannel("wecom", no_default, env)
    try:
        none = await channel.send(notice(recipient={"phone": PHONE}))
    finally:
        await channel.aclose()
    assert (none.status, none.error_code) == (ReceiptStatus.rejected, "no_address")


def test_signatures_match_the_vendors_documented_examples() -> None:
    # the vendors' documented recipes, computed independently of the fake server
    import base64
    import hashlib
    import hmac

    ts, secret = "1700000000000", "SEC123"
    expected = base64.b64encode(
        hmac.new(b"SEC123", b"1700000000000\nSEC123", hashlib.sha256).digest()
    ).decode()
    assert dingtalk_sign(secret, ts) == expected
    expected_fs = base64.b64encode(hmac.new(b"1700000000\nabc", b"", hashlib.sha256).digest()).decode()
    assert feishu_sign("abc", "1700000000") == expected_fs

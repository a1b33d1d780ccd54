"""``config/notifications.yaml``: the channels, their vendors' template codes, the channel
order per purpose, the retry policy and the cost caps — validated before anything is sent.

Secrets never sit in the file: each credential is the *name* of an environment variable
(``access_key_secret_env: CARECALL_ALIYUN_SMS_SECRET``), read when the channels are built.
Every vendor channel takes an ``endpoint`` (host[:port]) and a ``protocol``, so tests and
private clouds can point it elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.yamlfile import load_yaml_model
from dispatcher.notifications.channels.models import Purpose
from dispatcher.notifications.channels.policy import CostCaps, DeliveryPolicy, RetryPolicy

EnvName = Annotated[
    str, Field(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$", description="an environment variable's name")
]
Endpoint = Annotated[str, Field(pattern=r"^[A-Za-z0-9.-]+(:\d{1,5})?$", description="host or host:port")]


class NotificationsConfigError(Exception):
    """The notifications file, or a secret it names, is missing or malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VendorTemplate(_Strict):
    """An approved vendor template for one of our template ids. ``params`` are our
    parameter names in the order the vendor template numbers them ({1}, {2} … for
    Tencent); Alibaba gets them by name (``${name}``). ``code_by_locale`` picks another
    approved template for a locale (``en``)."""

    code: str = Field(min_length=1, max_length=64)
    params: list[str] = Field(default_factory=list)
    code_by_locale: dict[str, str] = Field(default_factory=dict)

    def code_for(self, locale: str) -> str:
        return self.code_by_locale.get(locale) or self.code_by_locale.get(locale.split("-")[0]) or self.code


class _VendorBase(_Strict):
    endpoint: Endpoint | None = Field(
        default=None, description="override the vendor's host (tests, private cloud)"
    )
    protocol: Literal["https", "http"] = "https"
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    templates: dict[str, VendorTemplate] = Field(default_factory=dict)


class AliyunSmsConfig(_VendorBase):
    type: Literal["aliyun_sms"]
    access_key_id_env: EnvName
    access_key_secret_env: EnvName
    region_id: str = "cn-hangzhou"
    sign_name: str = Field(min_length=1, max_length=32, description="the approved SMS signature (签名)")


class AliyunVoiceConfig(_VendorBase):
    type: Literal["aliyun_voice"]
    access_key_id_env: EnvName
    access_key_secret_env: EnvName
    region_id: str = "cn-hangzhou"
    called_show_number: str | None = Field(
        default=None, description="the bought display number; unset = public pool"
    )
    play_times: int = Field(default=3, ge=1, le=3)
    volume: int = Field(default=100, ge=0, le=100)
    speed: int = Field(default=0, ge=-500, le=500)


class TencentSmsConfig(_VendorBase):
    type: Literal["tencent_sms"]
    secret_id_env: EnvName
    secret_key_env: EnvName
    region: str = "ap-guangzhou"
    sms_sdk_app_id: str = Field(pattern=r"^\d{6,12}$")
    sign_name: str = Field(min_length=1, max_length=32)


class TencentVoiceConfig(_VendorBase):
    type: Literal["tencent_voice"]
    secret_id_env: EnvName
    secret_key_env: EnvName
    region: str = "ap-guangzhou"
    voice_sdk_app_id: str = Field(pattern=r"^\d{6,12}$")
    play_times: int = Field(default=2, ge=1, le=3)


class HttpSmsConfig(_Strict):
    """Any SMS gateway that takes a signed JSON POST (see docs/notifications.md)."""

    type: Literal["http_sms"]
    url: str = Field(pattern=r"^https?://")
    hmac_secret_env: EnvName
    signature_header: str = "X-CareCall-Signature"
    timestamp_header: str = "X-CareCall-Timestamp"
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    provider: str = Field(default="http_gateway", max_length=32)


class RobotGroup(_Strict):
    webhook_url_env: EnvName = Field(description="the group's webhook URL (it holds the robot's token)")
    secret_env: EnvName | None = Field(
        default=None, description="signing secret (DingTalk 加签, Feishu 签名校验)"
    )


class RobotConfig(_Strict):
    type: Literal["wecom", "dingtalk", "feishu"]
    groups: dict[str, RobotGroup] = Field(min_length=1)
    default_group: str | None = None
    mention_all: bool = Field(default=False, description="@all in the group (WeCom, DingTalk)")
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _default_is_a_group(self) -> RobotConfig:
        if self.default_group is not None and self.default_group not in self.groups:
            raise ValueError(f"default_group {self.default_group!r} is not one of the groups")
        return self


class SmtpConfig(_Strict):
    type: Literal["smtp"]
    host: str
    port: int = Field(default=465, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "tls"
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    sender_name: str = "CareCall"
    timeout_s: float = Field(default=10.0, gt=0, le=120)


ChannelConfig = Annotated[
    AliyunSmsConfig
    | AliyunVoiceConfig
    | TencentSmsConfig
    | TencentVoiceConfig
    | HttpSmsConfig
    | RobotConfig
    | SmtpConfig,
    Field(discriminator="type"),
]


class NotificationsConfig(_Strict):
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    routing: dict[Purpose, list[str]] = Field(
        default_factory=dict, description="the channel order per purpose, first tried first"
    )
    retry: RetryPolicy = RetryPolicy()
    cost_guard: CostCaps = CostCaps()
    send_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _routes_name_channels(self) -> NotificationsConfig:
        for purpose, names in self.routing.items():
            for name in names:
                if name not in self.channels and name != "app":
                    raise ValueError(f"routing.{purpose.value} names unknown channel {name!r}")
            if len(set(names)) != len(names):
                raise ValueError(f"routing.{purpose.value} names a channel twice")
        return self


def load_notifications_config(path: Path) -> NotificationsConfig:
    return load_yaml_model(path, NotificationsConfig, NotificationsConfigError)


def read_secret(env: Mapping[str, str], name: str, what: str) -> str:
    """The value of environment variable ``name``; a missing or empty one is an error that
    names the variable, never its value."""
    value = env.get(name, "")
    if not value:
        raise NotificationsConfigError(f"{what}: environment variable {name} is not set")
    return value


def environ() -> Mapping[str, str]:
    return os.environ


def delivery_policy(cfg: NotificationsConfig) -> DeliveryPolicy:
    return DeliveryPolicy(retry=cfg.retry, cost_guard=cfg.cost_guard, send_timeout_s=cfg.send_timeout_s)

"""Building the channels named in ``config/notifications.yaml`` and choosing a person's
channel order for a purpose."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dispatcher.notifications.channels.config import (
    AliyunSmsConfig,
    AliyunVoiceConfig,
    ChannelConfig,
    HttpSmsConfig,
    NotificationsConfig,
    NotificationsConfigError,
    RobotConfig,
    SmtpConfig,
    TencentSmsConfig,
    TencentVoiceConfig,
    environ,
)
from dispatcher.notifications.channels.models import Channel, Purpose
from dispatcher.notifications.channels.order import resolve_order


def build_channel(name: str, cfg: ChannelConfig, env: Mapping[str, str]) -> Channel:
    # imported here so a deployment without one vendor's SDK can still load the others' config
    if isinstance(cfg, AliyunSmsConfig | AliyunVoiceConfig):
        from dispatcher.notifications.channels.aliyun import AliyunSmsChannel, AliyunVoiceChannel

        if isinstance(cfg, AliyunSmsConfig):
            return AliyunSmsChannel(name, cfg, env)
        return AliyunVoiceChannel(name, cfg, env)
    if isinstance(cfg, TencentSmsConfig | TencentVoiceConfig):
        from dispatcher.notifications.channels.tencent import TencentSmsChannel, TencentVoiceChannel

        if isinstance(cfg, TencentSmsConfig):
            return TencentSmsChannel(name, cfg, env)
        return TencentVoiceChannel(name, cfg, env)
    if isinstance(cfg, HttpSmsConfig):
        from dispatcher.notifications.channels.http_sms import HttpSmsChannel

        return HttpSmsChannel(name, cfg, env)
    if isinstance(cfg, RobotConfig):
        from dispatcher.notifications.channels.robots import RobotChannel

        return RobotChannel(name, cfg, env)
    if isinstance(cfg, SmtpConfig):
        from dispatcher.notifications.channels.smtp import SmtpChannel

        return SmtpChannel(name, cfg, env)
    raise NotificationsConfigError(f"channel {name}: unknown type")  # pragma: no cover - the union is closed


def build_channels(cfg: NotificationsConfig, env: Mapping[str, str] | None = None) -> dict[str, Channel]:
    """Every configured channel; a missing secret fails here, at start, naming its variable."""
    env = environ() if env is None else env
    return {name: build_channel(name, channel, env) for name, channel in cfg.channels.items()}


def channel_order(
    cfg: NotificationsConfig,
    channels: Mapping[str, Channel],
    purpose: Purpose,
    person_order: str | Sequence[str] | None = None,
    extra: Mapping[str, Channel] | None = None,
) -> list[Channel]:
    """The channels to try for ``purpose``: the person's own order (kinds or channel
    names, ``"app sms voice"``) when they have one and it names something available, else
    the purpose's order from config (``order.resolve_order``). ``extra`` adds channels
    built elsewhere (the app's own ``app`` channel). Names with no channel are skipped."""
    known = {**channels, **(extra or {})}
    names = resolve_order(
        cfg.routing.get(purpose, []), {n: c.kind.value for n, c in known.items()}, person_order
    )
    return [known[n] for n in names]


async def close_all(channels: Mapping[str, Channel]) -> None:
    for channel in channels.values():
        await channel.aclose()

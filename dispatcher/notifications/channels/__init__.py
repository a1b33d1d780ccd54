"""Notification channels: SMS (Alibaba, Tencent, any HTTP gateway), voice notification
(Alibaba, Tencent), group robots (WeCom, DingTalk, Feishu) and e-mail, behind one
``Channel`` interface, with a pure delivery policy (retry, failover, cost guard) and a
small ``deliver`` orchestrator. See docs/notifications.md.

Only the standard library, third-party packages, pydantic and ``config`` are imported
here; vendor SDKs are imported by their own modules when a channel of theirs is built.
"""

from dispatcher.notifications.channels.config import (
    NotificationsConfig,
    NotificationsConfigError,
    delivery_policy,
    load_notifications_config,
)
from dispatcher.notifications.channels.delivery import (
    Attempt,
    CostAlert,
    CostCounters,
    DeliveryOutcome,
    InMemoryCostCounters,
    deliver,
)
from dispatcher.notifications.channels.masking import mask_email, mask_phone, scrub
from dispatcher.notifications.channels.models import (
    Channel,
    ChannelKind,
    DeliveryReceipt,
    Notice,
    Purpose,
    ReceiptStatus,
    Recipient,
)
from dispatcher.notifications.channels.policy import (
    CostCaps,
    DeliveryPolicy,
    OutcomeStatus,
    RetryPolicy,
)
from dispatcher.notifications.channels.registry import build_channels, channel_order, close_all

__all__ = [
    "Attempt",
    "Channel",
    "ChannelKind",
    "CostAlert",
    "CostCaps",
    "CostCounters",
    "DeliveryOutcome",
    "DeliveryPolicy",
    "DeliveryReceipt",
    "InMemoryCostCounters",
    "Notice",
    "NotificationsConfig",
    "NotificationsConfigError",
    "OutcomeStatus",
    "Purpose",
    "ReceiptStatus",
    "Recipient",
    "RetryPolicy",
    "build_channels",
    "channel_order",
    "close_all",
    "deliver",
    "delivery_policy",
    "load_notifications_config",
    "mask_email",
    "mask_phone",
    "scrub",
]

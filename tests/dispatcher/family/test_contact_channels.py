"""A contact's own channel order (contacts.channels) travels with their notification and
wins over the contact route; an empty one leaves the route's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dispatcher.notifications.channel_notifier import ChannelNotifier
from dispatcher.notifications.channels import ChannelKind, NotificationsConfig
from dispatcher.notifications.compose import CallFacts, compose, recipient, target_person
from dispatcher.notifications.models import Notification
from dispatcher.notifications.notifiers import LogNotifier
from dispatcher.registry.models import Contact
from tests.dispatcher.family.test_ladder_flow import sos_and_wait
from tests.dispatcher.family.test_views import world
from tests.dispatcher.notifications.test_channel_notifier import FakeChannel

__all__ = ["world"]

Maker = async_sessionmaker[AsyncSession]


async def test_a_contacts_own_order_goes_with_their_notification(world: dict[str, Any], maker: Maker) -> None:
    async with maker() as s, s.begin():
        await s.execute(update(Contact).where(Contact.name == "王小明").values(channels="voice sms"))
    d = await sos_and_wait(world, maker, 181)
    world["clock"].advance(120)
    await d.timers_once()
    async with maker() as s:
        bodies = list(
            await s.scalars(
                select(Notification.body)
                .where(Notification.purpose == "notify_contact")
                .order_by(Notification.id)
            )
        )
    assert [b["name"] for b in bodies] == ["王小明", "王小红"]
    assert bodies[0]["channels"] == "voice sms" and "channels" not in bodies[1]

    # the notifier tries the contact's kinds in their order, the route's for the other
    placeholder = {"type": "http_sms", "url": "http://127.0.0.1:9/unused", "hmac_secret_env": "UNUSED"}
    cfg = NotificationsConfig.model_validate(
        {"channels": {"sms_a": placeholder, "voice_a": placeholder}, "routing": {"contact": ["sms_a"]}}
    )
    sms, voice = FakeChannel("sms_a"), FakeChannel("voice_a", kind=ChannelKind.voice)
    n = ChannelNotifier(cfg, {"sms_a": sms, "voice_a": voice}, LogNotifier())
    notices = [
        compose(
            notification_id=i,
            call_id=1,
            purpose="notify_contact",
            body=b,
            facts=CallFacts(),
            to=recipient(target_person("phone:13900000001")),
        )
        for i, b in enumerate(bodies)
    ]
    assert notices[0].channels == ("voice", "sms") and notices[1].channels == ()
    assert [c.name for c in n.order("notify_contact", notices[0].channels)] == ["voice_a", "sms_a"]
    assert [c.name for c in n.order("notify_contact", notices[1].channels)] == ["sms_a"]
    # app has no meaning for a contact: their order falls back to the route
    assert [c.name for c in n.order("notify_contact", ("app",))] == ["sms_a"]

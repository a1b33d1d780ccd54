"""From an outbox row to a channel ``Notice``: which channel purpose a notification has,
who it reaches and what it says. Pure: the facts (the call's resident, address, events;
the person's phone and station) are read by the outbox and passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from dispatcher.notifications.channels.masking import scrub
from dispatcher.notifications.channels.models import Notice, Purpose, Recipient
from dispatcher.notifications.channels.order import parse_order

# the outbox's purposes (dispatcher/calls/timers.py, dispatcher/calls/paging.py) → the
# channel purposes of config/notifications.yaml
PURPOSES: dict[str, Purpose] = {
    "page": Purpose.page,
    "alert_station": Purpose.alert,
    "remind": Purpose.alert,
    "notify_contact": Purpose.contact,
    "alert_supervisor": Purpose.supervisor,
    "cost_guard": Purpose.supervisor,
    # not calls (dispatcher/notifications/service_pages.py): the people who run a station,
    # reached like supervisors (their own channel order, else the supervisor route)
    "order_breach": Purpose.supervisor,
    "visit_missed": Purpose.supervisor,
}

# the outbox purpose of the cost guard's alert to the area's supervisors
COST_GUARD_PURPOSE = "cost_guard"

# our template id per channel purpose (the vendors' approved codes are in the config)
TEMPLATES: dict[Purpose, str] = {
    Purpose.page: "sos_page",
    Purpose.alert: "station_alert",
    Purpose.contact: "contact_alert",
    Purpose.supervisor: "supervisor_alert",
}

_HEADINGS: dict[str, str] = {
    "page": "请接单",
    "alert_station": "新呼叫",
    "remind": "呼叫仍未确认",
    "notify_contact": "家人呼叫",
    "alert_supervisor": "需要督导",
    "cost_guard": "通知费用上限已到",
    "order_breach": "服务单超时",
    "visit_missed": "探访未完成",
}

_LEVELS = {"accept": "未按时接单", "start": "未按时开始", "done": "未按时完成"}

_COST_KINDS = {"sms": "短信", "voice": "语音通知"}
_COST_SCOPES = {"call": "本呼叫", "hour": "每小时"}


def cost_alert_body(*, kind: str, scope: str, used: int, limit: int, channel: str) -> dict[str, Any]:
    """The body of a cost guard alert: what was capped, and the note the supervisors read
    (``费用上限：短信 20/20 本呼叫，渠道 aliyun_sms``)."""
    note = f"费用上限：{_COST_KINDS.get(kind, kind)} {used}/{limit} {_COST_SCOPES.get(scope, scope)}，渠道 {channel}"
    return {"kind": kind, "scope": scope, "limit": limit, "used": used, "channel": channel, "note": note}


def channel_purpose(purpose: str) -> Purpose | None:
    return PURPOSES.get(purpose)


@dataclass(frozen=True)
class CallFacts:
    """What a message says about its call."""

    resident: str = ""
    address: str = ""
    event_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Person:
    """Where the target of a notification is reached (phone may be empty or malformed)."""

    person_id: str | None = None
    name: str | None = None
    phone: str = ""
    group: str | None = None
    # their own channel order (staff.channels), used when the notification carries none
    channels: str = ""


def recipient(person: Person) -> Recipient:
    """The channel recipient; a phone number the channels cannot use is left out (the
    SMS and voice channels then refuse the notice and the next channel is tried)."""
    base = Recipient(
        person_id=person.person_id, name=person.name[:64] if person.name else None, group=person.group
    )
    if not person.phone:
        return base
    try:
        return base.model_copy(update={"phone": Recipient(phone=person.phone).phone})
    except ValidationError:
        return base


def target_person(target: str) -> Person:
    """What the target alone says (``phone:…`` numbers, ``station:…`` groups); ``staff:``
    and ``user:`` targets are looked up by the outbox."""
    kind, _, ref = target.partition(":")
    if kind == "phone":
        return Person(phone=ref)
    if kind == "station":
        return Person(person_id=target, group=ref)
    return Person(person_id=target[:64])


def masked_target(target: str) -> str:
    """The target as it may appear in a log line or an audit row (numbers masked)."""
    return scrub(target)


def _short(value: Any, limit: int = 200) -> str:
    return str(value if value is not None else "")[:limit]


def _subject(call_id: int | None, body: dict[str, Any]) -> str:
    """What the notice is about: the call, else the service order or the visit."""
    if call_id is not None:
        return f"呼叫 #{call_id}"
    if body.get("order_id") is not None:
        level = _LEVELS.get(str(body.get("level", "")), _short(body.get("level", ""), 16))
        return f"服务单 #{_short(body['order_id'], 20)}" + (f" {level}" if level else "")
    if body.get("visit_id") is not None:
        return f"探访 #{_short(body['visit_id'], 20)}"
    return ""


def compose(
    *,
    notification_id: int,
    call_id: int | None,
    purpose: str,
    body: dict[str, Any],
    facts: CallFacts,
    to: Recipient,
) -> Notice:
    """The notice for one outbox row. ``notice_id`` is derived from the row, so every
    outbox retry of one notification carries the same idempotency key; ``body["channels"]``
    is the person's own channel order (or the page step's ``via``)."""
    channel_p = PURPOSES[purpose]
    events = body.get("event_types") or list(facts.event_types)
    resident = _short(body.get("resident") or facts.resident)
    address = _short(body.get("address") or facts.address)
    link = _short(body.get("link", ""))
    priority = _short(body.get("priority", ""))
    event = _short("、".join(str(e) for e in events))
    subject = _subject(call_id, body)
    params = {
        "call": str(call_id) if call_id is not None else "",
        "priority": priority,
        "resident": resident,
        "address": address,
        "event": event,
        "link": link,
        "name": _short(body.get("name", "")),
    }
    if call_id is None:
        params["subject"] = subject  # an order's or a visit's page: what it is about
    parts = [f"【{_HEADINGS.get(purpose, purpose)}】{subject}"]
    if priority:
        parts[0] += f"（{priority}）"
    parts += [p for p in (resident, address, event, _short(body.get("note", ""))) if p]
    text = "，".join(parts) + "。"
    if link:
        text += f" {link}"
    return Notice(
        notice_id=f"n{notification_id}",
        purpose=channel_p,
        recipient=to,
        call_id=call_id,
        template=TEMPLATES[channel_p],
        params=params,
        text=text[:2000],
        subject=f"CareCall {subject.replace('呼叫 ', '')} {_HEADINGS.get(purpose, purpose)}"[:200],
        channels=_channels(body.get("channels")),
    )


def _channels(raw: Any) -> tuple[str, ...]:
    """The order queued with the notification (``body["channels"]``: the person's own, or a
    page step's ``via``); anything malformed counts as none."""
    if isinstance(raw, str):
        return parse_order(raw)[:16]
    if isinstance(raw, list | tuple) and all(isinstance(w, str) for w in raw):
        return parse_order(raw)[:16]
    return ()

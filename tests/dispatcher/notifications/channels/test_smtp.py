"""E-mail through aiosmtplib to a local aiosmtpd server (random free port)."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from dispatcher.notifications.channels.config import SmtpConfig
from dispatcher.notifications.channels.models import ChannelKind, ReceiptStatus
from dispatcher.notifications.channels.smtp import SmtpChannel
from tests.dispatcher.notifications.channels.conftest import notice
from tests.support.ports import free_port as _free_port


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 mailbox unavailable"
        if address.startswith("busy@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 2.0.0 queued as 4F2A"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def _cfg(port: int) -> SmtpConfig:
    return SmtpConfig(
        type="smtp", host="127.0.0.1", port=port, security="none", sender="carecall@example.com", timeout_s=5
    )


async def test_email_arrives_with_subject_and_text(smtp_server: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp_server
    channel = SmtpChannel("email", _cfg(port), {})
    receipt = await channel.send(notice(notice_id="n-mail-1", subject="SOS 王秀英", purpose="supervisor"))
    assert receipt.status is ReceiptStatus.delivered and receipt.kind is ChannelKind.email
    assert receipt.provider_id and "n-mail-1" in receipt.provider_id
    (envelope,) = mailbox.messages
    assert envelope.mail_from == "carecall@example.com" and envelope.rcpt_tos == ["wang.li@example.com"]
    message = message_from_bytes(envelope.content, policy=policy.default)
    assert isinstance(message, EmailMessage)
    assert message["Subject"] == "SOS 王秀英"
    assert message["X-CareCall-Notice"] == "n-mail-1" and message["X-CareCall-Call"] == "42"
    assert "幸福里 3-2-101" in message.get_content()


@pytest.mark.parametrize(
    ("address", "status", "retryable", "code"),
    [
        ("nobody@example.com", ReceiptStatus.rejected, False, "smtp_550"),
        ("busy@example.com", ReceiptStatus.failed, True, "smtp_451"),
    ],
)
async def test_refused_recipients(
    smtp_server: tuple[Mailbox, int], address: str, status: ReceiptStatus, retryable: bool, code: str
) -> None:
    mailbox, port = smtp_server
    receipt = await SmtpChannel("email", _cfg(port), {}).send(notice(recipient={"email": address}))
    assert (receipt.status, receipt.retryable, receipt.error_code) == (status, retryable, code)
    assert mailbox.messages == []


async def test_no_server_is_a_retryable_failure_and_no_address_is_rejected() -> None:
    channel = SmtpChannel("email", _cfg(_free_port()), {})
    down = await channel.send(notice())
    assert (down.status, down.retryable, down.error_code) == (ReceiptStatus.failed, True, "network_error")
    none = await channel.send(notice(recipient={"phone": "13812345678"}))
    assert (none.status, none.error_code) == (ReceiptStatus.rejected, "no_address")

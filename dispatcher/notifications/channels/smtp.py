"""E-mail through ``aiosmtplib``: a plain-text message (subject + the notice's text).

SMTP answers map to receipts by their reply code: 4xx is temporary (failed, retryable),
5xx permanent (rejected); a refused recipient or a failed login is rejected; a connection
that cannot be made or times out is failed and retryable.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid

import aiosmtplib
import structlog

from dispatcher.notifications.channels.base import ReceiptClock
from dispatcher.notifications.channels.config import SmtpConfig, read_secret
from dispatcher.notifications.channels.masking import mask_email
from dispatcher.notifications.channels.models import ChannelKind, DeliveryReceipt, Notice, ReceiptStatus

log = structlog.get_logger("carecall.notify.channels")


class SmtpChannel:
    kind = ChannelKind.email

    def __init__(self, name: str, cfg: SmtpConfig, env: Mapping[str, str]) -> None:
        self.name = name
        self.cfg = cfg
        what = f"channel {name}"
        self._username = read_secret(env, cfg.username_env, what) if cfg.username_env else None
        self._password = read_secret(env, cfg.password_env, what) if cfg.password_env else None

    def message(self, notice: Notice, to: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = formataddr((self.cfg.sender_name, self.cfg.sender))
        msg["To"] = to
        msg["Subject"] = notice.subject or notice.text.splitlines()[0][:80]
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(idstring=notice.notice_id, domain=self.cfg.sender.split("@")[1])
        msg["X-CareCall-Notice"] = notice.notice_id
        if notice.call_id is not None:
            msg["X-CareCall-Call"] = str(notice.call_id)
        msg["Content-Language"] = notice.locale
        msg.set_content(notice.text)
        return msg

    async def send(self, notice: Notice) -> DeliveryReceipt:
        clock = ReceiptClock(self.name, self.kind, "smtp")
        to = notice.recipient.email
        if to is None:
            return clock.rejected_locally("no_address", "the recipient has no e-mail address")
        msg = self.message(notice, to)
        try:
            _, reply = await aiosmtplib.send(
                msg,
                hostname=self.cfg.host,
                port=self.cfg.port,
                username=self._username,
                password=self._password,
                use_tls=self.cfg.security == "tls",
                start_tls=self.cfg.security == "starttls",
                timeout=self.cfg.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            temporary = all(400 <= c < 500 for c in codes)
            receipt = clock.receipt(
                ReceiptStatus.failed if temporary else ReceiptStatus.rejected,
                retryable=temporary,
                error_code=f"smtp_{codes[0] if codes else 'refused'}",
                error_message="recipient refused",
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            receipt = clock.receipt(
                ReceiptStatus.rejected, error_code=f"smtp_{exc.code}", error_message="authentication failed"
            )
        except aiosmtplib.SMTPResponseException as exc:
            temporary = 400 <= exc.code < 500
            receipt = clock.receipt(
                ReceiptStatus.failed if temporary else ReceiptStatus.rejected,
                retryable=temporary,
                error_code=f"smtp_{exc.code}",
                error_message=exc.message,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            receipt = clock.receipt(
                ReceiptStatus.failed,
                retryable=True,
                error_code="network_error",
                error_message=type(exc).__name__,
            )
        else:
            receipt = clock.receipt(
                ReceiptStatus.delivered, provider_id=msg["Message-ID"], request_id=reply[:100]
            )
        log.info(
            "email",
            channel=self.name,
            to=mask_email(to),
            status=receipt.status.value,
            code=receipt.error_code,
        )
        return receipt

    async def aclose(self) -> None:
        return None  # one SMTP connection per message

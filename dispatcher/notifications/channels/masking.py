"""Log-safe forms of phone numbers and e-mail addresses (no log line of this package holds
one in clear). Masked numbers keep the first three and last four digits of the number
(``+86138****5678``), enough to tell two contacts apart, not enough to ring anyone."""

from __future__ import annotations

import re

# Mainland mobiles (optionally +86), landlines with an area code and any number written
# with a leading +. Digits glued to letters or other digits (ids, timestamps) are kept.
_PHONE = re.compile(
    r"(?<![\w+])(?:(?:\+|00)?86[- ]?)?1[3-9]\d{9}(?!\d)"
    r"|(?<![\w+])0\d{2,3}[- ]\d{7,8}(?!\d)"
    r"|(?<![\w+])\+\d[\d ()-]{6,18}\d(?!\d)"
)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def _mask_digits(text: str) -> str:
    digits = [i for i, ch in enumerate(text) if ch.isdigit()]
    if len(digits) < 8:
        return "".join("*" if ch.isdigit() else ch for ch in text)
    national_start = 2 if text.startswith("+86") else 0
    keep = set(digits[national_start : national_start + 3] + digits[-4:])
    if national_start:
        keep |= set(digits[:national_start])
    return "".join(ch if (i in keep or not ch.isdigit()) else "*" for i, ch in enumerate(text))


def mask_phone(phone: str) -> str:
    """``+8613812345678`` → ``+86138****5678``; ``13812345678`` → ``138****5678``."""
    return _mask_digits(phone)


def mask_email(email: str) -> str:
    """``wang.li@example.com`` → ``w***@example.com``."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def scrub(text: str) -> str:
    """``text`` with every phone-number-like run and e-mail address masked."""
    text = _PHONE.sub(lambda m: _mask_digits(m.group()), text)
    return _EMAIL.sub(lambda m: mask_email(m.group()), text)

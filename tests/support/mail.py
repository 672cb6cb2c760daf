"""Reading what the test stack's mail sink received (one `.eml` file per message)."""

from __future__ import annotations

import email
import email.policy
import re
import time
from email.message import EmailMessage
from pathlib import Path

from veil.core.config import Settings


def mail_dir(settings: Settings) -> Path:
    return settings.data_dir / "mail"


def messages_to(settings: Settings, address: str) -> list[EmailMessage]:
    """Every message the sink holds for `address`, oldest first."""
    found = []
    for path in sorted(mail_dir(settings).glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        if address.lower() in str(message["To"]).lower():
            found.append(message)
    return found


def wait_for_mail(
    settings: Settings, address: str, *, count: int = 1, timeout: float = 10
) -> list[EmailMessage]:
    """Wait until at least `count` messages for `address` arrived; all of them, oldest first."""
    deadline = time.monotonic() + timeout
    while True:
        found = messages_to(settings, address)
        if len(found) >= count or time.monotonic() > deadline:
            assert len(found) >= count, f"expected {count} messages to {address}, got {len(found)}"
            return found
        time.sleep(0.05)


def body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    content: str = part.get_content()
    return content


def latest_code(settings: Settings, address: str, *, count: int = 1) -> str:
    """The six-digit code in the `count`-th message to `address` (waiting for it)."""
    message = wait_for_mail(settings, address, count=count)[count - 1]
    match = re.search(r"\b(\d{6})\b", body(message))
    assert match, body(message)
    return match.group(1)

"""Reading what the test stack's mail sink received (one `.eml` file per message)."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from veil.core.config import Settings
from veil.devstack import mailbox


def mail_dir(settings: Settings) -> Path:
    return settings.data_dir / "mail"


def messages_to(settings: Settings, address: str) -> list[EmailMessage]:
    """Every message the sink holds for `address`, oldest first."""
    return mailbox.messages_to(mail_dir(settings), address)


def wait_for_mail(
    settings: Settings, address: str, *, count: int = 1, timeout: float = 10
) -> list[EmailMessage]:
    """Wait until at least `count` messages for `address` arrived; all of them, oldest first."""
    return mailbox.wait_for_mail(mail_dir(settings), address, count=count, timeout=timeout)


def body(message: EmailMessage) -> str:
    return mailbox.body_of(message)


def latest_code(settings: Settings, address: str, *, count: int = 1) -> str:
    """The six-digit code in the `count`-th message to `address` (waiting for it)."""
    return mailbox.wait_for_code(mail_dir(settings), address, count=count)

"""Reading what the test stack's mail sink received (one `.eml` file per message)."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from veil.core.config import Settings
from veil.devstack import mailbox
from veil.devstack.mailsink import MailSink


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


class MailServerOfItsOwn:
    """A test's own mail server (a development sink under `directory`), which the test can stop
    and start again on the same port: a mail server that is down, then back. Stopped at exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sink = MailSink(directory)
        self.port = self._sink.start()

    def stop(self) -> None:
        self._sink.stop()

    def start(self) -> None:
        # Nothing listened meanwhile, so the port is free again unless another process took it.
        assert self._sink.start() == self.port, "the mail server's port was taken while it was down"

    def __enter__(self) -> MailServerOfItsOwn:
        return self

    def __exit__(self, *_: object) -> None:
        self._sink.stop()

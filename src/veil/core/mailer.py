"""Outgoing email over SMTP (challenge codes, notices). Messages carry no message content, key or
token beyond the one-time code they exist for, and are never logged."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from veil.core.problems import BackendUnavailable


class Mailer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout

    async def send(self, to: str, subject: str, body: str) -> None:
        """Hand one plain-text message to the SMTP server; BackendUnavailable if it will not take it."""
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                start_tls=self._starttls,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise BackendUnavailable("mail server unavailable") from exc

"""Creating users and signing in through the public API.

Sign-up is two steps, as for a person: `POST /v1/auth/register` mails a six-digit code, and
`POST /v1/auth/register/verify` with that code creates the account. The code is read from the
test stack's mail sink; there is no switch that turns verification off.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.stackdir import test_mail_dir
from veil.devstack import mailbox

PASSWORD = "correct horse battery staple 7"


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.org"


def request_signup(client: httpx.Client, email: str, password: str = PASSWORD, **extra: Any) -> str:
    """Start a sign-up and return the code it mailed."""
    before = len(mailbox.messages_to(test_mail_dir(), email))
    response = client.post("/v1/auth/register", json={"email": email, "password": password, **extra})
    assert response.status_code == 202, response.text
    return mailbox.wait_for_code(test_mail_dir(), email, count=before + 1)


def register(client: httpx.Client, email: str | None = None, password: str = PASSWORD, **extra: Any) -> str:
    """A verified account with this email (a new one by default); returns the email."""
    email = email or new_email()
    code = request_signup(client, email, password, **extra)
    verified = client.post("/v1/auth/register/verify", json={"email": email, "code": code})
    assert verified.status_code == 201, verified.text
    return email


def login(client: httpx.Client, email: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/auth/login", json={"email": email, "password": password, **extra})
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}

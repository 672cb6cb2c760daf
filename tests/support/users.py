"""Creating users and signing in through the public API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

PASSWORD = "correct horse battery staple 7"


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.org"


def register(client: httpx.Client, email: str | None = None, password: str = PASSWORD) -> str:
    email = email or new_email()
    response = client.post("/v1/auth/register", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return email


def login(client: httpx.Client, email: str, password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/auth/login", json={"email": email, "password": password, **extra})
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


def bearer(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}

"""Envelopes and conversations for tests (random bytes stand in for real ciphertext)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx

from tests.support.keys import b64
from tests.support.users import bearer


def envelope(key_epoch: int = 0, size: int = 64, **overrides: Any) -> dict[str, Any]:
    body = {
        "message_id": str(uuid.uuid4()),
        "ciphertext": b64(os.urandom(size)),
        "nonce": b64(os.urandom(12)),
        "auth_tag": b64(os.urandom(16)),
        "content_type": "text",
        "key_epoch": key_epoch,
    }
    body.update(overrides)
    return body


def group(client: httpx.Client, owner: dict[str, Any], *joiners: dict[str, Any]) -> dict[str, Any]:
    """A group created by `owner` that every joiner was invited to and joined."""
    created = client.post("/v1/conversations", json={"type": "group"}, headers=bearer(owner))
    assert created.status_code == 201, created.text
    conversation_id = created.json()["conversation_id"]
    for joiner in joiners:
        invited = client.post(
            f"/v1/conversations/{conversation_id}/invitations",
            json={"user_id": joiner["user_id"]},
            headers=bearer(owner),
        )
        assert invited.status_code == 201, invited.text
        accepted = client.post(
            f"/v1/conversations/{conversation_id}/invitations/accept", headers=bearer(joiner)
        )
        assert accepted.status_code == 204, accepted.text
    conversation: dict[str, Any] = client.get(
        f"/v1/conversations/{conversation_id}", headers=bearer(owner)
    ).json()
    return conversation


def send(
    client: httpx.Client, who: dict[str, Any], conversation_id: str, body: dict[str, Any]
) -> httpx.Response:
    return client.post(f"/v1/conversations/{conversation_id}/messages", json=body, headers=bearer(who))

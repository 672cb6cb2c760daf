"""Blocking end to end: the API (idempotent, paginated, unblock restores), what a block prevents
(an invitation to the blocker, a direct conversation with them: both exactly the 404 of a user who
does not exist), and the blocks table in the export and the erasure."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.e2e.test_account import LONG, run_maintenance
from tests.support.mail import latest_code, messages_to
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, register
from veil.core.blobstore import BlobStore
from veil.core.config import Settings


def user(client: httpx.Client) -> dict[str, Any]:
    email = register(client)
    pair = login(client, email)
    pair["email"] = email
    return pair


def block(client: httpx.Client, who: dict[str, Any], whom: str) -> httpx.Response:
    return client.put(f"/v1/blocks/{whom}", headers=bearer(who))


def unblock(client: httpx.Client, who: dict[str, Any], whom: str) -> httpx.Response:
    return client.delete(f"/v1/blocks/{whom}", headers=bearer(who))


def blocked_ids(client: httpx.Client, who: dict[str, Any], **params: Any) -> list[str]:
    response = client.get("/v1/blocks", params=params, headers=bearer(who))
    assert response.status_code == 200, response.text
    return [item["user_id"] for item in response.json()["items"]]


def start_direct(client: httpx.Client, who: dict[str, Any], member_id: str) -> httpx.Response:
    return client.post(
        "/v1/conversations", json={"type": "direct", "member_id": member_id}, headers=bearer(who)
    )


def invite(client: httpx.Client, who: dict[str, Any], cid: str, user_id: str) -> httpx.Response:
    return client.post(f"/v1/conversations/{cid}/invitations", json={"user_id": user_id}, headers=bearer(who))


def new_group(client: httpx.Client, owner: dict[str, Any]) -> str:
    created = client.post("/v1/conversations", json={"type": "group"}, headers=bearer(owner))
    assert created.status_code == 201, created.text
    cid: str = created.json()["conversation_id"]
    return cid


def test_blocking_is_idempotent_listed_and_paginated(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        others = [user(client) for _ in range(5)]
        ids = sorted(o["user_id"] for o in others)

        first = block(client, alice, ids[0])
        assert first.status_code == 204 and first.content == b""
        [listed] = client.get("/v1/blocks", headers=bearer(alice)).json()["items"]
        assert set(listed) == {"user_id", "created_at"} and listed["user_id"] == ids[0]
        # A repeat changes nothing, not even the time it was first blocked.
        assert block(client, alice, ids[0]).status_code == 204
        assert client.get("/v1/blocks", headers=bearer(alice)).json()["items"] == [listed]

        for other in ids[1:]:
            assert block(client, alice, other).status_code == 204
        # Pages of two by user id, each continuing after the last one; the last page says so.
        pages, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/v1/blocks", params=params, headers=bearer(alice)).json()
            pages.append([item["user_id"] for item in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [uid for page in pages for uid in page] == ids
        assert [len(page) for page in pages] == [2, 2, 1]
        assert blocked_ids(client, alice) == ids
        # Blocks are the caller's own: someone else's list is theirs alone.
        assert blocked_ids(client, others[0]) == []

        assert unblock(client, alice, ids[2]).status_code == 204
        assert unblock(client, alice, ids[2]).status_code == 204  # idempotent
        assert blocked_ids(client, alice) == ids[:2] + ids[3:]
        # Unblocking someone never blocked, or an id without an account, changes nothing.
        assert unblock(client, alice, str(uuid.uuid4())).status_code == 204
        assert blocked_ids(client, alice) == ids[:2] + ids[3:]

        themselves = block(client, alice, alice["user_id"])
        assert themselves.status_code == 422
        assert themselves.headers["content-type"] == "application/problem+json"
        nobody = block(client, alice, str(uuid.uuid4()))
        assert nobody.status_code == 404
        assert block(client, alice, "not-a-uuid").status_code == 404
        assert unblock(client, alice, "not-a-uuid").status_code == 404
        assert blocked_ids(client, alice) == ids[:2] + ids[3:]  # none of the refusals stored anything

        for params in ({"limit": 0}, {"limit": 201}, {"limit": "²"}, {"cursor": "¹"}, {"cursor": "x"}):
            bad = client.get("/v1/blocks", params=params, headers=bearer(alice))
            assert bad.status_code == 422, (params, bad.text)
        assert client.get("/v1/blocks").status_code == 401
        assert client.put(f"/v1/blocks/{ids[0]}").status_code == 401
        assert client.delete(f"/v1/blocks/{ids[0]}").status_code == 401


def test_a_blocked_user_cannot_start_a_direct_conversation(api: LiveServer) -> None:
    with api.client() as client:
        alice, mallory = user(client), user(client)
        assert block(client, alice, mallory["user_id"]).status_code == 204

        refused = start_direct(client, mallory, alice["user_id"])
        missing = start_direct(client, mallory, str(uuid.uuid4()))
        assert refused.status_code == missing.status_code == 404
        assert refused.json() == missing.json()
        assert refused.headers["content-type"] == missing.headers["content-type"]
        assert client.get("/v1/conversations", headers=bearer(alice)).json()["items"] == []
        assert client.get("/v1/conversations", headers=bearer(mallory)).json()["items"] == []

        # Unblocking restores it.
        assert unblock(client, alice, mallory["user_id"]).status_code == 204
        assert start_direct(client, mallory, alice["user_id"]).status_code == 201


def test_block_and_leave_ends_a_direct_conversation(api: LiveServer) -> None:
    with api.client() as client:
        alice, mallory = user(client), user(client)
        cid = start_direct(client, mallory, alice["user_id"]).json()["conversation_id"]
        assert block(client, alice, mallory["user_id"]).status_code == 204
        assert client.delete(f"/v1/conversations/{cid}/members/me", headers=bearer(alice)).status_code == 204
        refused = start_direct(client, mallory, alice["user_id"])
        assert refused.status_code == 404
        assert refused.json() == start_direct(client, mallory, str(uuid.uuid4())).json()
        assert client.get("/v1/conversations", headers=bearer(alice)).json()["items"] == []
        # Alice herself may still come back.
        back = start_direct(client, alice, mallory["user_id"])
        assert back.status_code == 200 and back.json()["conversation_id"] == cid


def test_the_blocker_keeps_their_own_abilities(api: LiveServer) -> None:
    """A block restrains the blocked user only: the blocker may still start a conversation."""
    with api.client() as client:
        alice, mallory = user(client), user(client)
        assert block(client, alice, mallory["user_id"]).status_code == 204
        assert start_direct(client, alice, mallory["user_id"]).status_code == 201
        cid = new_group(client, alice)
        assert invite(client, alice, cid, mallory["user_id"]).status_code == 201


def test_a_blocked_user_cannot_invite_the_blocker(api: LiveServer) -> None:
    with api.client() as client:
        alice, mallory, admin, carol = user(client), user(client), user(client), user(client)
        cid = new_group(client, mallory)
        assert invite(client, mallory, cid, admin["user_id"]).status_code == 201
        client.post(f"/v1/conversations/{cid}/invitations/accept", headers=bearer(admin))
        path = f"/v1/conversations/{cid}/members/{admin['user_id']}"
        assert client.put(path, json={"role": "admin"}, headers=bearer(mallory)).status_code == 204
        assert block(client, alice, mallory["user_id"]).status_code == 204

        refused = invite(client, mallory, cid, alice["user_id"])
        missing = invite(client, mallory, cid, str(uuid.uuid4()))
        assert refused.status_code == missing.status_code == 404
        assert refused.json() == missing.json()
        assert client.get("/v1/conversations", headers=bearer(alice)).json()["items"] == []
        members = client.get(f"/v1/conversations/{cid}", headers=bearer(mallory)).json()["members"]
        assert alice["user_id"] not in {m["user_id"] for m in members}
        # Only Mallory is refused: she still invites others, and others still invite Alice.
        assert invite(client, mallory, cid, carol["user_id"]).status_code == 201
        assert invite(client, admin, cid, alice["user_id"]).status_code == 201
        client.post(f"/v1/conversations/{cid}/invitations/decline", headers=bearer(alice))

        # Unblocking restores it.
        assert unblock(client, alice, mallory["user_id"]).status_code == 204
        assert invite(client, mallory, cid, alice["user_id"]).status_code == 201


def test_the_export_lists_whom_the_account_blocked(api: LiveServer, settings: Settings) -> None:
    with api.client() as client:
        alice, bob, carol = user(client), user(client), user(client)
        assert block(client, alice, bob["user_id"]).status_code == 204
        assert block(client, carol, alice["user_id"]).status_code == 204  # Carol's data, not Alice's

        mails = len(messages_to(settings, alice["email"]))
        asked = client.post("/v1/account/requests", json={"type": "export"}, headers=bearer(alice))
        assert asked.status_code == 202, asked.text
        code = latest_code(settings, alice["email"], count=mails + 1)
        done = client.post(
            f"/v1/account/requests/{asked.json()['request_id']}/confirm",
            json={"code": code},
            headers=bearer(alice),
        )
        assert done.status_code == 200, done.text
    archive = httpx.get(done.json()["download"]["url"]).json()
    [entry] = archive["blocks"]
    assert entry["user_id"] == bob["user_id"]
    assert datetime.fromisoformat(entry["created_at"]) <= datetime.now(UTC)


async def test_erasure_removes_the_blocks_on_both_sides(
    api: LiveServer,
    settings: Settings,
    db: asyncpg.Connection[asyncpg.Record],
    blobs: BlobStore,
    database_url: str,
) -> None:
    with api.client() as client:
        alice, bob, carol = user(client), user(client), user(client)
        assert block(client, alice, bob["user_id"]).status_code == 204
        assert block(client, carol, alice["user_id"]).status_code == 204
        assert block(client, carol, bob["user_id"]).status_code == 204
        mails = len(messages_to(settings, alice["email"]))
        asked = client.post(
            "/v1/account/requests", json={"type": "erasure", "password": PASSWORD}, headers=bearer(alice)
        )
        assert asked.status_code == 202, asked.text
        code = latest_code(settings, alice["email"], count=mails + 1)
        done = client.post(
            f"/v1/account/requests/{asked.json()['request_id']}/confirm",
            json={"code": code},
            headers=bearer(alice),
        )
        assert done.status_code == 202, done.text

    counts = await run_maintenance(
        database_url, blobs, datetime.now(UTC) + timedelta(days=30, minutes=1), LONG
    )
    assert counts["accounts_purged"] == 1
    rows = await db.fetch("SELECT blocker_id::text, blocked_id::text FROM blocks")
    assert [(r["blocker_id"], r["blocked_id"]) for r in rows] == [(carol["user_id"], bob["user_id"])]

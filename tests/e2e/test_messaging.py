"""Conversations, groups and messages over HTTP on the real database."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support.keys import b64
from tests.support.messaging import envelope, group, send
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register


def user(client: httpx.Client) -> dict[str, Any]:
    return login(client, register(client))


def test_direct_conversation_is_unique_per_pair(api: LiveServer) -> None:
    with api.client() as client:
        a, b = user(client), user(client)
        first = client.post(
            "/v1/conversations", json={"type": "direct", "member_id": b["user_id"]}, headers=bearer(a)
        )
        assert first.status_code == 201
        again = client.post(
            "/v1/conversations", json={"type": "direct", "member_id": a["user_id"]}, headers=bearer(b)
        )
        assert again.status_code == 200
        assert again.json()["conversation_id"] == first.json()["conversation_id"]
        body = first.json()
        assert body["type"] == "direct"
        assert body["epoch"] == 0
        assert body["last_seq"] == 0
        assert sorted(m["user_id"] for m in body["members"]) == sorted([a["user_id"], b["user_id"]])
        assert {m["state"] for m in body["members"]} == {"joined"}
        listed = client.get("/v1/conversations", headers=bearer(a)).json()
        assert [c["conversation_id"] for c in listed["items"]] == [body["conversation_id"]]
        assert (
            client.post(
                "/v1/conversations", json={"type": "direct", "member_id": a["user_id"]}, headers=bearer(a)
            ).status_code
            == 422
        )


def test_messages_get_gap_free_seq_and_paginate_both_ways(api: LiveServer) -> None:
    with api.client() as client:
        owner, member = user(client), user(client)
        conversation = group(client, owner, member)
        cid, epoch = conversation["conversation_id"], conversation["epoch"]
        sent = [send(client, owner if i % 2 else member, cid, envelope(epoch)) for i in range(7)]
        assert [r.status_code for r in sent] == [201] * 7
        assert [r.json()["seq"] for r in sent] == list(range(1, 8))

        page = client.get(
            f"/v1/conversations/{cid}/messages", params={"limit": 3}, headers=bearer(owner)
        ).json()
        assert [m["seq"] for m in page["items"]] == [1, 2, 3]
        rest = client.get(
            f"/v1/conversations/{cid}/messages",
            params={"cursor": page["next_cursor"], "limit": 10},
            headers=bearer(owner),
        ).json()
        assert [m["seq"] for m in rest["items"]] == [4, 5, 6, 7]
        assert rest["next_cursor"] is None
        back = client.get(
            f"/v1/conversations/{cid}/messages", params={"before_seq": 6, "limit": 2}, headers=bearer(owner)
        ).json()
        assert [m["seq"] for m in back["items"]] == [5, 4]
        stored = page["items"][0]
        original = sent[0].request.read()
        assert stored["ciphertext"] in original.decode()
        assert stored["sender_id"] == member["user_id"]
        assert stored["sender_device_id"] == member["session_id"]
        assert set(stored) == {
            "message_id",
            "conversation_id",
            "sender_id",
            "sender_device_id",
            "seq",
            "created_at",
            "ciphertext",
            "nonce",
            "auth_tag",
            "content_type",
            "parent_id",
            "key_epoch",
        }


async def test_concurrent_senders_get_gap_free_seq(make_server: ServerFactory) -> None:
    server = make_server(VEIL_RATE_LIMITS="off")
    with server.client() as client:
        owner, a, b = user(client), user(client), user(client)
        conversation = group(client, owner, a, b)
    cid, epoch = conversation["conversation_id"], conversation["epoch"]
    async with server.async_client() as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/conversations/{cid}/messages", json=envelope(epoch), headers=bearer(who))
                for who in [owner, a, b] * 20
            )
        )
    assert all(r.status_code == 201 for r in responses)
    assert sorted(r.json()["seq"] for r in responses) == list(range(1, 61))


async def test_idempotent_send_under_concurrency_and_across_a_restart(
    make_server: ServerFactory, database_url: str
) -> None:
    server = make_server(VEIL_RATE_LIMITS="off")
    with server.client() as client:
        owner, member = user(client), user(client)
        conversation = group(client, owner, member)
    cid = conversation["conversation_id"]
    body = envelope(conversation["epoch"])
    async with server.async_client() as client:
        responses = await asyncio.gather(
            *(
                client.post(f"/v1/conversations/{cid}/messages", json=body, headers=bearer(owner))
                for _ in range(10)
            )
        )
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({(r.json()["seq"], r.json()["created_at"]) for r in responses}) == 1
    server.stop()

    restarted = make_server(VEIL_RATE_LIMITS="off")
    with restarted.client() as client:
        again = send(client, owner, cid, body)
        assert again.status_code == 200
        assert again.json() == responses[0].json()
        changed = send(client, owner, cid, {**body, "ciphertext": b64(os.urandom(64))})
        assert changed.status_code == 409
    conn = await asyncpg.connect(database_url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM messages WHERE message_id = $1", body["message_id"])
            == 1
        )
    finally:
        await conn.close()


def test_epoch_rule_and_membership_changes(api: LiveServer) -> None:
    with api.client() as client:
        owner, alice, bob = user(client), user(client), user(client)
        conversation = group(client, owner, alice)
        cid = conversation["conversation_id"]
        assert conversation["epoch"] == 1  # alice joining changed it
        stale = send(client, owner, cid, envelope(0))
        assert stale.status_code == 409
        assert stale.json()["current_epoch"] == 1

        # An invitation alone does not change the epoch, accepting it does.
        client.post(
            f"/v1/conversations/{cid}/invitations", json={"user_id": bob["user_id"]}, headers=bearer(owner)
        )
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["epoch"] == 1
        assert send(client, owner, cid, envelope(1)).json()["seq"] == 1
        # The invitee sees the conversation but not its messages.
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(bob)).status_code == 200
        assert client.get(f"/v1/conversations/{cid}/messages", headers=bearer(bob)).status_code == 404
        assert send(client, bob, cid, envelope(1)).status_code == 404
        client.post(f"/v1/conversations/{cid}/invitations/accept", headers=bearer(bob))
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["epoch"] == 2
        # History from before joining stays closed to the new member.
        assert client.get(f"/v1/conversations/{cid}/messages", headers=bearer(bob)).json()["items"] == []
        assert send(client, bob, cid, envelope(2)).json()["seq"] == 2

        # A removed member loses access at once, and the epoch moves on.
        assert (
            client.delete(
                f"/v1/conversations/{cid}/members/{alice['user_id']}", headers=bearer(owner)
            ).status_code
            == 204
        )
        assert client.get(f"/v1/conversations/{cid}/messages", headers=bearer(alice)).status_code == 404
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(alice)).status_code == 404
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["epoch"] == 3
        # Leaving works the same way.
        assert client.delete(f"/v1/conversations/{cid}/members/me", headers=bearer(bob)).status_code == 204
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["epoch"] == 4


def test_roles_and_the_membership_matrix(api: LiveServer) -> None:
    with api.client() as client:
        owner, admin, member, invitee, stranger, target = (user(client) for _ in range(6))
        cid = group(client, owner, member, target)["conversation_id"]
        client.post(
            f"/v1/conversations/{cid}/invitations",
            json={"user_id": invitee["user_id"]},
            headers=bearer(owner),
        )

        def invite(who: dict[str, Any], whom: dict[str, Any]) -> int:
            return client.post(
                f"/v1/conversations/{cid}/invitations", json={"user_id": whom["user_id"]}, headers=bearer(who)
            ).status_code

        assert invite(member, admin) == 403
        assert invite(invitee, admin) == 404
        assert invite(stranger, admin) == 404
        assert invite(owner, member) == 409
        # The owner makes an admin; admins invite and remove members but not other admins or the owner.
        assert invite(owner, admin) == 201
        client.post(f"/v1/conversations/{cid}/invitations/accept", headers=bearer(admin))
        promote = f"/v1/conversations/{cid}/members/{admin['user_id']}"
        assert client.put(promote, json={"role": "admin"}, headers=bearer(member)).status_code == 403
        assert client.put(promote, json={"role": "owner"}, headers=bearer(owner)).status_code == 422
        assert client.put(promote, json={"role": "admin"}, headers=bearer(owner)).status_code == 204
        extra = user(client)
        assert invite(admin, extra) == 201
        promote_member = f"/v1/conversations/{cid}/members/{member['user_id']}"
        assert client.put(promote_member, json={"role": "admin"}, headers=bearer(admin)).status_code == 403
        for who, status in [(member, 200), (invitee, 200), (stranger, 404)]:
            assert client.get(f"/v1/conversations/{cid}", headers=bearer(who)).status_code == status
        for who, status in [(member, 200), (invitee, 404), (stranger, 404)]:
            assert client.get(f"/v1/conversations/{cid}/messages", headers=bearer(who)).status_code == status
            assert client.post(
                f"/v1/conversations/{cid}/receipts",
                json={"type": "read", "up_to_seq": 1},
                headers=bearer(who),
            ).status_code in (status if status == 404 else 422,)
        assert (
            client.delete(
                f"/v1/conversations/{cid}/members/{owner['user_id']}", headers=bearer(admin)
            ).status_code
            == 403
        )
        # Members cannot remove others; nobody can remove the owner.
        assert (
            client.delete(
                f"/v1/conversations/{cid}/members/{target['user_id']}", headers=bearer(member)
            ).status_code
            == 403
        )
        assert (
            client.delete(
                f"/v1/conversations/{cid}/members/{owner['user_id']}", headers=bearer(member)
            ).status_code
            == 403
        )
        assert (
            client.delete(
                f"/v1/conversations/{cid}/members/{target['user_id']}", headers=bearer(stranger)
            ).status_code
            == 404
        )
        # Nobody joins without accepting their own invitation.
        assert (
            client.post(f"/v1/conversations/{cid}/invitations/accept", headers=bearer(stranger)).status_code
            == 404
        )
        assert (
            client.post(f"/v1/conversations/{cid}/invitations/accept", headers=bearer(member)).status_code
            == 409
        )
        # A missing conversation looks exactly like someone else's.
        missing = client.get("/v1/conversations/00000000-0000-0000-0000-000000000000", headers=bearer(owner))
        hidden = client.get(f"/v1/conversations/{cid}", headers=bearer(stranger))
        assert missing.status_code == hidden.status_code == 404
        assert missing.json() == hidden.json()


async def test_every_membership_change_is_one_event(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        owner, a, b = user(client), user(client), user(client)
        cid = group(client, owner, a)["conversation_id"]
        client.post(
            f"/v1/conversations/{cid}/invitations", json={"user_id": b["user_id"]}, headers=bearer(owner)
        )
        client.post(f"/v1/conversations/{cid}/invitations/decline", headers=bearer(b))
        client.delete(f"/v1/conversations/{cid}/members/{a['user_id']}", headers=bearer(owner))
    conn = await asyncpg.connect(database_url)
    try:
        kinds = [
            r["kind"]
            for r in await conn.fetch(
                "SELECT kind FROM membership_events WHERE conversation_id = $1 ORDER BY id", cid
            )
        ]
    finally:
        await conn.close()
    assert kinds == ["created", "invited", "joined", "invited", "declined", "removed"]


def test_receipts_are_monotonic_metadata(api: LiveServer) -> None:
    with api.client() as client:
        owner, member = user(client), user(client)
        conversation = group(client, owner, member)
        cid = conversation["conversation_id"]
        for _ in range(3):
            send(client, owner, cid, envelope(conversation["epoch"]))
        url = f"/v1/conversations/{cid}/receipts"
        assert (
            client.post(url, json={"type": "delivered", "up_to_seq": 3}, headers=bearer(member)).status_code
            == 204
        )
        assert (
            client.post(url, json={"type": "read", "up_to_seq": 2}, headers=bearer(member)).status_code == 204
        )
        assert (
            client.post(url, json={"type": "read", "up_to_seq": 1}, headers=bearer(member)).status_code == 204
        )
        assert (
            client.post(url, json={"type": "read", "up_to_seq": 9}, headers=bearer(member)).status_code == 422
        )
        assert (
            client.post(url, json={"type": "seen", "up_to_seq": 1}, headers=bearer(member)).status_code == 422
        )


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"text": "hello"}, 422),
        ({"body": "hello"}, 422),
        ({"plaintext": "hello"}, 422),
        ({"content": "hello"}, 422),
        ({"sender_id": "00000000-0000-0000-0000-000000000000"}, 422),
        ({"created_at": "2026-01-01T00:00:00.000Z"}, 422),
        ({"ciphertext": b64(b"This is my secret plan, in plain text for everyone.")}, 422),
        ({"ciphertext": "%%%"}, 422),
        ({"nonce": b64(os.urandom(8))}, 422),
        ({"auth_tag": b64(os.urandom(15))}, 422),
        ({"content_type": "text/plain"}, 422),
        ({"key_epoch": "0"}, 422),
        ({"ciphertext": b64(os.urandom(65 * 1024))}, 413),
    ],
)
def test_envelope_validation(make_server: ServerFactory, change: dict[str, Any], status: int) -> None:
    server = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000", VEIL_MAX_REQUEST_BODY="200000")
    with server.client() as client:
        owner = user(client)
        cid = group(client, owner)["conversation_id"]
        assert send(client, owner, cid, {**envelope(0), **change}).status_code == status
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["last_seq"] == 0


def test_wrong_content_type_is_415(api: LiveServer) -> None:
    with api.client() as client:
        owner = user(client)
        cid = group(client, owner)["conversation_id"]
        response = client.post(
            f"/v1/conversations/{cid}/messages",
            content=b"x",
            headers={**bearer(owner), "Content-Type": "text/plain"},
        )
        assert response.status_code == 415


def test_send_limit_is_per_user_across_devices(make_server: ServerFactory) -> None:
    server = make_server(VEIL_MESSAGES_PER_MINUTE="5", VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with server.client() as client:
        email = register(client)
        phone, laptop = login(client, email), login(client, email)
        other = user(client)
        conversation = group(client, phone, other)
        cid, epoch = conversation["conversation_id"], conversation["epoch"]
        statuses = [
            send(client, phone if i % 2 else laptop, cid, envelope(epoch)).status_code for i in range(7)
        ]
        assert statuses == [201] * 5 + [429, 429]
        assert send(client, other, cid, envelope(epoch)).status_code == 201


def test_leaving_a_direct_conversation_and_coming_back(api: LiveServer) -> None:
    with api.client() as client:
        a, b = user(client), user(client)
        first = client.post(
            "/v1/conversations", json={"type": "direct", "member_id": b["user_id"]}, headers=bearer(a)
        )
        cid = first.json()["conversation_id"]
        send(client, b, cid, envelope(0))
        assert client.delete(f"/v1/conversations/{cid}/members/me", headers=bearer(a)).status_code == 204
        assert client.get(f"/v1/conversations/{cid}", headers=bearer(a)).status_code == 404
        again = client.post(
            "/v1/conversations", json={"type": "direct", "member_id": b["user_id"]}, headers=bearer(a)
        )
        assert again.status_code == 200
        assert again.json()["conversation_id"] == cid
        assert again.json()["epoch"] == 2
        assert {m["user_id"] for m in again.json()["members"]} == {a["user_id"], b["user_id"]}
        # What was said while (and before) they were away stays closed to them.
        assert client.get(f"/v1/conversations/{cid}/messages", headers=bearer(a)).json()["items"] == []

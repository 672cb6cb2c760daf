"""Attacks on conversations that used to work, each shown to fail now: putting someone back into a
direct conversation they left, and unlimited groups and invitations (filling other people's
conversation lists)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.support.messaging import envelope, send
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register
from tests.support.ws import nothing_more, registered, ws_connect

FAST_AUTH = {"VEIL_AUTH_RATE": "10000", "VEIL_AUTH_BURST": "10000"}


def user(client: httpx.Client) -> dict[str, Any]:
    return login(client, register(client))


def start_direct(client: httpx.Client, who: dict[str, Any], member_id: str) -> httpx.Response:
    return client.post(
        "/v1/conversations", json={"type": "direct", "member_id": member_id}, headers=bearer(who)
    )


def new_group(client: httpx.Client, owner: dict[str, Any]) -> httpx.Response:
    return client.post("/v1/conversations", json={"type": "group"}, headers=bearer(owner))


def invite(client: httpx.Client, who: dict[str, Any], cid: str, user_id: str) -> httpx.Response:
    return client.post(f"/v1/conversations/{cid}/invitations", json={"user_id": user_id}, headers=bearer(who))


def conversation_ids(client: httpx.Client, who: dict[str, Any]) -> list[str]:
    listed = client.get("/v1/conversations", headers=bearer(who))
    assert listed.status_code == 200, listed.text
    return [c["conversation_id"] for c in listed.json()["items"]]


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) >= 1


# --- a direct conversation is re-joined only by the one who left --------------------------------


async def test_the_other_side_cannot_put_a_leaver_back(api: LiveServer) -> None:
    with api.client() as client:
        alice, mallory = user(client), user(client)
        created = start_direct(client, mallory, alice["user_id"])
        cid = created.json()["conversation_id"]
        assert send(client, mallory, cid, envelope(0)).status_code == 201
        assert client.delete(f"/v1/conversations/{cid}/members/me", headers=bearer(alice)).status_code == 204

    async with ws_connect(api, alice) as ws:
        await registered(ws)
        with api.client() as client:
            # Mallory "starts" the conversation again: she is shown it as it is, without Alice.
            again = start_direct(client, mallory, alice["user_id"])
            assert again.status_code == 200, again.text
            body = again.json()
            assert body["conversation_id"] == cid
            assert [m["user_id"] for m in body["members"]] == [mallory["user_id"]]
            assert body["epoch"] == 1  # Alice's leave; nobody joined since
            # Her next message reaches nobody but herself.
            assert send(client, mallory, cid, envelope(body["epoch"])).status_code == 201
            assert client.get(f"/v1/conversations/{cid}", headers=bearer(alice)).status_code == 404
            assert client.get(f"/v1/conversations/{cid}/messages", headers=bearer(alice)).status_code == 404
            assert conversation_ids(client, alice) == []
        assert await nothing_more(ws)
        assert await nothing_more(ws, "membership", wait=0.3)


def test_the_leaver_comes_back_by_starting_it_themselves(api: LiveServer) -> None:
    with api.client() as client:
        alice, mallory = user(client), user(client)
        cid = start_direct(client, alice, mallory["user_id"]).json()["conversation_id"]
        assert client.delete(f"/v1/conversations/{cid}/members/me", headers=bearer(alice)).status_code == 204
        start_direct(client, mallory, alice["user_id"])  # changes nothing for Alice
        assert send(client, mallory, cid, envelope(1)).status_code == 201

        back = start_direct(client, alice, mallory["user_id"])
        assert back.status_code == 200
        assert back.json()["conversation_id"] == cid
        assert {m["user_id"] for m in back.json()["members"]} == {alice["user_id"], mallory["user_id"]}
        assert back.json()["epoch"] == 2
        # Nothing said while she was away; what comes after her return, she receives.
        assert client.get(f"/v1/conversations/{cid}/messages", headers=bearer(alice)).json()["items"] == []
        sent = send(client, mallory, cid, envelope(2))
        assert sent.status_code == 201
        items = client.get(f"/v1/conversations/{cid}/messages", headers=bearer(alice)).json()["items"]
        assert [m["message_id"] for m in items] == [sent.json()["message_id"]]


# --- named limits on groups and invitations -----------------------------------------------------


def test_group_creation_is_limited_per_user(make_server: ServerFactory) -> None:
    server = make_server(VEIL_GROUPS_PER_HOUR="3", **FAST_AUTH)
    with server.client() as client:
        email = register(client)
        phone, laptop = login(client, email), login(client, email)
        other = user(client)
        statuses = [new_group(client, phone if i % 2 else laptop).status_code for i in range(3)]
        assert statuses == [201] * 3
        assert_rate_limited(new_group(client, phone))  # one budget for all of a user's devices
        assert len(conversation_ids(client, phone)) == 3
        # Someone else's budget is their own, and direct conversations are not groups.
        assert new_group(client, other).status_code == 201
        assert start_direct(client, phone, other["user_id"]).status_code == 201


def test_invitations_are_limited_per_user(make_server: ServerFactory) -> None:
    server = make_server(VEIL_INVITATIONS_PER_HOUR="3", **FAST_AUTH)
    with server.client() as client:
        owner, other_owner = user(client), user(client)
        invitees = [user(client) for _ in range(4)]
        cid = new_group(client, owner).json()["conversation_id"]
        statuses = [invite(client, owner, cid, who["user_id"]).status_code for who in invitees[:3]]
        assert statuses == [201] * 3
        assert_rate_limited(invite(client, owner, cid, invitees[3]["user_id"]))
        assert conversation_ids(client, invitees[3]) == []
        other_cid = new_group(client, other_owner).json()["conversation_id"]
        assert invite(client, other_owner, other_cid, invitees[3]["user_id"]).status_code == 201


async def test_nobody_can_fill_someones_conversation_list(make_server: ServerFactory) -> None:
    """One inviter may have only a few invitations pending with one invitee, however many groups
    they make, even when the invitations race; other inviters are not affected, and an answer
    frees a place."""
    server = make_server(VEIL_PENDING_INVITATIONS_PER_INVITEE="2", **FAST_AUTH)
    with server.client() as client:
        victim, flooder, friend = user(client), user(client), user(client)
        groups = [new_group(client, flooder).json()["conversation_id"] for _ in range(8)]

    async with server.async_client() as aclient:
        responses = await asyncio.gather(
            *(
                aclient.post(
                    f"/v1/conversations/{cid}/invitations",
                    json={"user_id": victim["user_id"]},
                    headers=bearer(flooder),
                )
                for cid in groups
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 2 + [429] * 6
    for response in responses:
        if response.status_code == 429:
            assert_rate_limited(response)

    with server.client() as client:
        pending = conversation_ids(client, victim)
        assert len(pending) == 2
        # The flooder used up only their own places: a friend still gets through.
        friends_group = new_group(client, friend).json()["conversation_id"]
        assert invite(client, friend, friends_group, victim["user_id"]).status_code == 201
        # Declining frees a place for the flooder again (the bound is on pending invitations).
        declined = client.post(f"/v1/conversations/{pending[0]}/invitations/decline", headers=bearer(victim))
        assert declined.status_code == 204
        spare = next(cid for cid in groups if cid not in pending)
        assert invite(client, flooder, spare, victim["user_id"]).status_code == 201
        assert_rate_limited(invite(client, flooder, pending[0], victim["user_id"]))
        assert len(conversation_ids(client, victim)) == 3

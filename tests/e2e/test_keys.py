"""The key directory and device mailboxes over the wire, on the real database."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support.keys import b64, bundle, one_time_prekeys, random_envelope
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register


def device(client: httpx.Client, **login_extra: Any) -> dict[str, Any]:
    """A signed-in device (a session) whose tokens are in the returned pair."""
    return login(client, register(client), **login_extra)


def publish(client: httpx.Client, pair: dict[str, Any], body: dict[str, Any]) -> httpx.Response:
    return client.put("/v1/keys", json=body, headers=bearer(pair))


def test_publish_look_up_and_claim(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = device(client), device(client)
        keys = bundle(one_time=3)
        assert publish(client, alice, keys).json() == {"count": 3, "pq_count": 0}
        assert client.get("/v1/keys/count", headers=bearer(alice)).json() == {
            "one_time_prekeys": 3,
            "pq_one_time_prekeys": 0,
        }

        listed = client.get(f"/v1/users/{alice['user_id']}/devices", headers=bearer(bob)).json()
        assert listed == {
            "master_key": None,
            "items": [
                {
                    "device_id": alice["session_id"],
                    "identity_key": keys["identity_key"],
                    "signing_key": keys["signing_key"],
                    "signed_prekey": keys["signed_prekey"],
                    "certificate": None,
                }
            ],
        }
        claim_url = f"/v1/users/{alice['user_id']}/devices/{alice['session_id']}/claim"
        claimed = [client.post(claim_url, headers=bearer(bob)).json() for _ in range(4)]
        # Oldest first, each once, then none left.
        assert [c["one_time_prekey"] for c in claimed[:3]] == keys["one_time_prekeys"]
        assert claimed[3]["one_time_prekey"] is None
        assert claimed[3]["signed_prekey"] == keys["signed_prekey"]
        # A device that never published a post-quantum prekey: the member is there, and null.
        assert all(c["pq_prekey"] is None for c in claimed)
        assert client.get("/v1/keys/count", headers=bearer(alice)).json()["one_time_prekeys"] == 0

        more = client.post(
            "/v1/keys/one-time", json={"one_time_prekeys": one_time_prekeys(2, 10)}, headers=bearer(alice)
        )
        assert more.json() == {"count": 2, "pq_count": 0}


def _with(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    import copy

    changed = copy.deepcopy(body)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


PEM = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VuBCIEIHBrZXktbWF0ZXJpYWwtbmV2ZXItc2VudA==\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("identity_key",), PEM),
        (("identity_key",), b64(os.urandom(64))),  # a 64-byte seed or expanded key
        (("identity_key",), b64(os.urandom(31))),
        (("identity_key",), b64(bytes(32))),
        (("signing_key",), b64(os.urandom(48))),
        (("signed_prekey", "signature"), b64(os.urandom(64))),  # does not verify
        (("signed_prekey", "signature"), b64(os.urandom(32))),
        (("signed_prekey", "key_id"), 2**32),
        (("signed_prekey", "key_id"), "1"),
        (("identity_key",), base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()),
        (("private_key",), b64(os.urandom(32))),
        (("identity_private_key",), b64(os.urandom(32))),
        (("one_time_prekeys",), [{"key_id": 1, "public_key": b64(os.urandom(32)), "private_key": "x"}]),
        (("one_time_prekeys",), [{"key_id": 1, "public_key": b64(os.urandom(32))}] * 2),
    ],
)
def test_invalid_or_private_looking_keys_are_422_and_store_nothing(
    api: LiveServer, path: tuple[str, ...], value: Any
) -> None:
    with api.client() as client:
        pair = device(client)
        response = publish(client, pair, _with(bundle(), path, value))
        assert response.status_code == 422, response.text
        assert client.get(f"/v1/users/{pair['user_id']}/devices", headers=bearer(pair)).json()["items"] == []


def test_reuploading_a_key_id_with_other_bytes_is_409_and_changes_nothing(api: LiveServer) -> None:
    with api.client() as client:
        pair = device(client)
        keys = bundle(one_time=2)
        publish(client, pair, keys)
        assert publish(client, pair, keys).json()["count"] == 2  # identical: idempotent
        clash = one_time_prekeys(1, first_id=keys["one_time_prekeys"][0]["key_id"]) + one_time_prekeys(1, 50)
        response = client.post("/v1/keys/one-time", json={"one_time_prekeys": clash}, headers=bearer(pair))
        assert response.status_code == 409
        assert response.json()["key_ids"] == [keys["one_time_prekeys"][0]["key_id"]]
        assert client.get("/v1/keys/count", headers=bearer(pair)).json()["one_time_prekeys"] == 2


async def test_concurrent_claims_hand_out_each_key_once(make_server: ServerFactory) -> None:
    server = make_server(VEIL_RATE_LIMITS="off")
    with server.client() as client:
        owner = device(client)
        keys = bundle(one_time=30)
        publish(client, owner, keys)
        claimers = [device(client) for _ in range(4)]
    url = f"/v1/users/{owner['user_id']}/devices/{owner['session_id']}/claim"
    async with server.async_client() as client:
        responses = await asyncio.gather(
            *(client.post(url, headers=bearer(claimers[i % 4])) for i in range(40))
        )
    assert all(r.status_code == 200 for r in responses)
    handed = [r.json()["one_time_prekey"] for r in responses]
    given = [h["key_id"] for h in handed if h is not None]
    assert sorted(given) == sorted(k["key_id"] for k in keys["one_time_prekeys"])  # each exactly once
    assert handed.count(None) == 10


def test_claims_are_rate_limited_per_claimer_and_device(make_server: ServerFactory) -> None:
    server = make_server(VEIL_CLAIMS_PER_HOUR="3", VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with server.client() as client:
        owner, other_owner, claimer = device(client), device(client), device(client)
        publish(client, owner, bundle(one_time=10))
        publish(client, other_owner, bundle(one_time=10))
        url = f"/v1/users/{owner['user_id']}/devices/{owner['session_id']}/claim"
        statuses = [client.post(url, headers=bearer(claimer)).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        # Nobody can drain the owner's keys: 7 are left for everyone else.
        assert client.get("/v1/keys/count", headers=bearer(owner)).json()["one_time_prekeys"] == 7
        other = f"/v1/users/{other_owner['user_id']}/devices/{other_owner['session_id']}/claim"
        assert client.post(other, headers=bearer(claimer)).status_code == 200


def test_unknown_user_or_device_is_404(api: LiveServer) -> None:
    with api.client() as client:
        a, b = device(client), device(client)
        publish(client, a, bundle())
        assert (
            client.get(
                "/v1/users/00000000-0000-0000-0000-000000000000/devices", headers=bearer(b)
            ).status_code
            == 404
        )
        wrong_owner = f"/v1/users/{b['user_id']}/devices/{a['session_id']}/claim"
        assert client.post(wrong_owner, headers=bearer(b)).status_code == 404


async def test_logout_removes_the_device_its_keys_and_its_mailbox(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        alice, bob = device(client), device(client)
        publish(client, alice, bundle())
        publish(client, bob, bundle())
        sent = client.post(
            "/v1/devices/messages",
            json={"content_type": "session_init", "messages": [random_envelope(alice["session_id"])]},
            headers=bearer(bob),
        )
        assert sent.status_code == 202
        assert client.post("/v1/auth/logout", headers=bearer(alice)).status_code == 204
        assert client.get(f"/v1/users/{alice['user_id']}/devices", headers=bearer(bob)).json()["items"] == []
    conn = await asyncpg.connect(database_url)
    try:
        device_id = alice["session_id"]
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM device_messages WHERE recipient_device_id = $1", device_id
            )
            == 0
        )
        assert (
            await conn.fetchval("SELECT count(*) FROM one_time_prekeys WHERE device_id = $1", device_id) == 0
        )
        changes = await conn.fetch(
            "SELECT change FROM key_changes WHERE device_id = $1 ORDER BY id", device_id
        )
        assert [c["change"] for c in changes] == ["device_added", "device_removed"]
    finally:
        await conn.close()


async def test_key_changes_are_recorded(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        pair = device(client)
        first = bundle()
        publish(client, pair, first)
        assert (
            publish(client, pair, _with(first, ("identity_key",), bundle()["identity_key"])).status_code
            == 200
        )
        assert publish(client, pair, bundle(signed_prekey_id=2, first_one_time_id=100)).status_code == 200
    conn = await asyncpg.connect(database_url)
    try:
        changes = await conn.fetch("SELECT change FROM key_changes ORDER BY id")
    finally:
        await conn.close()
    assert [c["change"] for c in changes] == [
        "device_added",
        "identity_changed",
        "identity_changed",
        "signing_key_changed",
        "signed_prekey_changed",
    ]


def test_device_limit(make_server: ServerFactory) -> None:
    server = make_server(VEIL_MAX_DEVICES="2", VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with server.client() as client:
        email = register(client)
        devices = [login(client, email) for _ in range(3)]
        assert publish(client, devices[0], bundle()).status_code == 200
        assert publish(client, devices[1], bundle()).status_code == 200
        third = publish(client, devices[2], bundle())
        assert third.status_code == 409
        client.post("/v1/auth/logout", headers=bearer(devices[0]))
        assert publish(client, devices[2], bundle()).status_code == 200


def test_device_messages_are_queued_until_acknowledged(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob, eve = device(client), device(client), device(client)
        for pair in (alice, bob, eve):
            publish(client, pair, bundle())
        envelopes = [random_envelope(bob["session_id"]) for _ in range(3)]
        response = client.post(
            "/v1/devices/messages",
            json={"content_type": "sender_key", "messages": envelopes},
            headers=bearer(alice),
        )
        assert response.status_code == 202
        inbox = client.get("/v1/devices/messages", headers=bearer(bob)).json()
        assert [m["ciphertext"] for m in inbox["items"]] == [e["ciphertext"] for e in envelopes]
        assert {m["sender_id"] for m in inbox["items"]} == {alice["user_id"]}
        assert {m["sender_device_id"] for m in inbox["items"]} == {alice["session_id"]}
        assert inbox["gap"] is None
        assert client.get("/v1/devices/messages", headers=bearer(eve)).json()["items"] == []

        first = inbox["items"][0]["id"]
        assert client.delete(f"/v1/devices/messages/{first}", headers=bearer(eve)).status_code == 404
        assert client.delete(f"/v1/devices/messages/{first}", headers=bearer(bob)).status_code == 204
        assert client.delete(f"/v1/devices/messages/{first}", headers=bearer(bob)).status_code == 404
        left = client.get("/v1/devices/messages", headers=bearer(bob)).json()["items"]
        assert [m["id"] for m in left] == [m["id"] for m in inbox["items"][1:]]
        page = client.get("/v1/devices/messages", params={"limit": 1}, headers=bearer(bob)).json()
        assert len(page["items"]) == 1
        assert page["next_cursor"] == str(left[0]["id"])


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"ciphertext": b64(b"Hello Bob, this is definitely plaintext!")}, 422),
        ({"nonce": b64(os.urandom(16))}, 422),
        ({"auth_tag": b64(os.urandom(12))}, 422),
        ({"ciphertext": "not base64!"}, 422),
        ({"ciphertext": b64(os.urandom(2000))}, 413),
        ({"text": "hello"}, 422),
        ({"device_id": "00000000-0000-0000-0000-000000000000"}, 404),
    ],
)
def test_bad_device_messages_are_refused_and_nothing_is_queued(
    make_server: ServerFactory, change: dict[str, str], status: int
) -> None:
    server = make_server(VEIL_MAX_CIPHERTEXT="1000", VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with server.client() as client:
        alice, bob = device(client), device(client)
        publish(client, bob, bundle())
        good = random_envelope(bob["session_id"])
        body = {"content_type": "session_init", "messages": [good, {**good, **change}]}
        assert client.post("/v1/devices/messages", json=body, headers=bearer(alice)).status_code == status
        assert client.get("/v1/devices/messages", headers=bearer(bob)).json()["items"] == []


def test_a_full_queue_is_a_429_never_silent_loss(make_server: ServerFactory) -> None:
    server = make_server(VEIL_DEVICE_QUEUE_CAP="3", VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with server.client() as client:
        alice, bob = device(client), device(client)
        publish(client, bob, bundle())
        body = {"content_type": "session_message", "messages": [random_envelope(bob["session_id"])] * 2}
        assert client.post("/v1/devices/messages", json=body, headers=bearer(alice)).status_code == 202
        full = client.post("/v1/devices/messages", json=body, headers=bearer(alice))
        assert full.status_code == 429
        assert "retry-after" in full.headers
        assert len(client.get("/v1/devices/messages", headers=bearer(bob)).json()["items"]) == 2


async def test_expired_device_messages_leave_a_gap_marker(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        alice, bob = device(client), device(client)
        publish(client, bob, bundle())
        body = {"content_type": "session_message", "messages": [random_envelope(bob["session_id"])] * 3}
        client.post("/v1/devices/messages", json=body, headers=bearer(alice))
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE device_messages SET expires_at = now() - interval '1 second' "
                "WHERE id IN (SELECT id FROM device_messages ORDER BY id LIMIT 2)"
            )
        finally:
            await conn.close()
        inbox = client.get("/v1/devices/messages", headers=bearer(bob)).json()
        assert len(inbox["items"]) == 1
        assert inbox["gap"]["dropped"] == 2
        # Reported once.
        assert client.get("/v1/devices/messages", headers=bearer(bob)).json()["gap"] is None

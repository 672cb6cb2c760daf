"""The reference client replaces its signed and PQ last-resort prekeys weekly, through the server.

A stolen signed prekey opens every set-up that used no one-time key for as long as it is served;
rotation bounds that to a week (and the previous key a week more, for set-ups in flight).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.clients import Clients, FakeClock
from tests.support.databases import query
from tests.support.lying_server import LyingServer
from tests.support.server import LiveServer
from tests.support.users import bearer, login
from veil.client.protocol.keys import PREKEY_ROTATION_SECONDS
from veil.client.sdk.models import VeilError


def served_keys(api: LiveServer, database_url: str, clients: Clients, user_id: str) -> dict[str, Any]:
    """What the server holds for the user's (only) device: its listing entry, as anyone sees it,
    and the key id of the PQ last-resort prekey (handed out only once the one-time ones run out)."""
    with api.client() as http:
        token = bearer(login(http, clients.emails["alice"]))
        (device,) = http.get(f"/v1/users/{user_id}/devices", headers=token).json()["items"]
    rows = query(
        database_url,
        "SELECT key_id FROM pq_last_resort_prekeys WHERE device_id = $1",
        uuid.UUID(device["device_id"]),
    )
    entry: dict[str, Any] = device
    entry["pq_last_resort_key_id"] = rows[0]["key_id"]
    return entry


def test_prekeys_are_replaced_weekly_and_new_sessions_use_the_new_ones(
    clients: Clients, api: LiveServer, database_url: str
) -> None:
    clock = FakeClock()
    first_run = clients.new("bob", clock=clock)
    alice = clients.new("alice")
    first_run.fetch_device_messages()  # the first sync starts the week, and the key store keeps it
    bob = clients.open("bob", clock=clock)  # the next command: a new process, the same key store
    before = served_keys(api, database_url, clients, bob.user_id)

    clock.advance(PREKEY_ROTATION_SECONDS - 60)
    bob.fetch_device_messages()
    assert served_keys(api, database_url, clients, bob.user_id)["signed_prekey"] == before["signed_prekey"]

    clock.advance(60)
    bob.fetch_device_messages()
    after = served_keys(api, database_url, clients, bob.user_id)
    published = bob.crypto.bundle(include_one_time=False)
    assert after["signed_prekey"] == published["signed_prekey"] != before["signed_prekey"]
    new_pq_id = published["pq_last_resort_prekey"]["key_id"]
    assert after["pq_last_resort_key_id"] == new_pq_id != before["pq_last_resort_key_id"]
    # Only the prekeys changed: the device keeps its identity, signing key and certificate.
    for member in ("device_id", "identity_key", "signing_key", "certificate"):
        assert after[member] == before[member]
    assert after["certificate"] is not None

    # Alice sets up a session against the new keys, and Bob reads her.
    direct = alice.create_direct(bob.user_id)
    alice.send_text(direct.conversation_id, "after the rotation")
    assert [m.text for m in bob.history(direct.conversation_id)] == ["after the rotation"]


def test_a_rotation_the_server_did_not_take_is_published_at_the_next_sync(
    clients: Clients, api: LiveServer, database_url: str
) -> None:
    clock = FakeClock()
    server = LyingServer(api.ca_file)
    bob = clients.new("bob", clock=clock, transport=server)
    clients.new("alice")
    bob.fetch_device_messages()
    before = served_keys(api, database_url, clients, bob.user_id)

    clock.advance(PREKEY_ROTATION_SECONDS)
    refusal = server.refuse("PUT", "/v1/keys")
    with pytest.raises(VeilError):
        bob.fetch_device_messages()
    assert served_keys(api, database_url, clients, bob.user_id)["signed_prekey"] == before["signed_prekey"]

    server.stop(refusal)
    clock.advance(60)
    bob.fetch_device_messages()
    after = served_keys(api, database_url, clients, bob.user_id)
    assert after["signed_prekey"] == bob.crypto.bundle(include_one_time=False)["signed_prekey"]
    assert after["signed_prekey"] != before["signed_prekey"]
    assert [s.status for s in server.sent if (s.method, s.path) == ("PUT", "/v1/keys")][-2:] == [503, 200]

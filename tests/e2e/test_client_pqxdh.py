"""PQXDH through the real server: every session the reference client opens mixes an ML-KEM-768
shared secret into X3DH, with a one-time post-quantum prekey the server hands out once."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.test_client_trust import lied_to
from tests.support.clients import Clients
from tests.support.databases import query
from tests.support.server import LiveServer
from veil.client.protocol.pqxdh import PQ_CIPHERTEXT_SIZE
from veil.client.sdk.http import VeilClient


def pq_prekeys_left(api: LiveServer, client: VeilClient) -> int:
    with api.client() as http:
        response = http.get("/v1/keys/count", headers={"Authorization": f"Bearer {client.access_token()}"})
        assert response.status_code == 200, response.text
        return int(response.json()["pq_one_time_prekeys"])


def test_sessions_are_opened_with_a_one_time_ml_kem_prekey(
    clients: Clients, api: LiveServer, database_url: str
) -> None:
    alice, bob = clients.new("alice"), clients.new("bob")
    stock = pq_prekeys_left(api, bob)
    assert stock > 0  # published at login

    assert alice.open_session(bob.user_id) == [bob.device_id]
    assert alice.send_device_payload(bob.user_id, b"quantum-safe hello") == 1

    [init, _] = query(
        database_url,
        "SELECT content_type, ciphertext FROM device_messages WHERE recipient_device_id = $1 ORDER BY id",
        uuid.UUID(bob.device_id),
    )
    frame = bytes(init["ciphertext"])
    assert init["content_type"] == "session_init"
    assert frame[:2] == b"\x02\x04"  # version 2, session_init_pq
    assert len(frame) > PQ_CIPHERTEXT_SIZE  # the ML-KEM ciphertext travels in the frame
    assert pq_prekeys_left(api, bob) == stock - 1  # handed out once, gone from the server

    assert [m.plaintext for m in bob.fetch_device_messages()] == [b"", b"quantum-safe hello"]
    # Bob's device used its one-time key and deleted it: the same set-up cannot be accepted again.
    assert not bob.crypto.keys.is_pq_one_time_prekey(frame_pq_key_id(frame))


def test_a_server_that_strips_the_pq_prekey_gets_no_session(clients: Clients) -> None:
    """Handing out Bob's bundle without its ML-KEM prekey would make Alice fall back to classical
    X3DH, which a quantum attacker could later break: her client refuses the bundle instead."""
    alice, server = lied_to(clients, "alice")
    bob = clients.new("bob")

    def strip(bundle: dict[str, Any]) -> dict[str, Any]:
        return {**bundle, "pq_prekey": None}

    rule = server.rewrite("POST", r"/v1/users/[^/]+/devices/[^/]+/claim", strip)
    assert alice.open_session(bob.user_id) == []
    assert server.device_messages_sent() == []
    assert any("not the ones its owner approved" in w and "post-quantum" in w for w in alice.take_warnings())
    server.stop(rule)
    assert alice.open_session(bob.user_id) == [bob.device_id]


def frame_pq_key_id(frame: bytes) -> int:
    """The PQ prekey id of a `session_init_pq` frame (after version, type, IK, EK, spk_id,
    has_opk and opk_id)."""
    offset = 2 + 32 + 32 + 4 + 1 + 4
    return int.from_bytes(frame[offset : offset + 4], "big")

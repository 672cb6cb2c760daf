"""One-time prekeys against strangers who drain them (issue 13, item 11).

The attack: any two accounts took all of a user's one-time prekeys, because the only limit was per
(claimer, device). Now a device hands out at most VEIL_ONE_TIME_PREKEYS_PER_HOUR one-time prekeys
across all claimers; later claims still succeed, with the signed prekey alone (one_time_prekey
null), and the owner hears `prekeys_low` while an hour's worth of keys at that rate is left.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.support.clients import Clients
from tests.support.keys import bundle
from tests.support.users import bearer, login, register
from tests.support.ws import next_frame, nothing_more, registered, ws_connect

LIMITS = {"VEIL_AUTH_RATE": "1000", "VEIL_AUTH_BURST": "1000"}


def device(client: httpx.Client) -> dict[str, Any]:
    return login(client, register(client))


def claim_url(owner: dict[str, Any]) -> str:
    return f"/v1/users/{owner['user_id']}/devices/{owner['session_id']}/claim"


def remaining(client: httpx.Client, owner: dict[str, Any]) -> int:
    count: int = client.get("/v1/keys/count", headers=bearer(owner)).json()["one_time_prekeys"]
    return count


async def test_many_claimers_together_take_no_more_than_the_budget(make_server: ServerFactory) -> None:
    server = make_server(VEIL_ONE_TIME_PREKEYS_PER_HOUR="5", **LIMITS)
    with server.client() as client:
        owner = device(client)
        keys = bundle(one_time=30)
        assert client.put("/v1/keys", json=keys, headers=bearer(owner)).status_code == 200
        claimers = [device(client) for _ in range(6)]
    # Six accounts, three claims each, all at once: each within its own per-claimer limit (10).
    async with server.async_client() as client:
        responses = await asyncio.gather(
            *(client.post(claim_url(owner), headers=bearer(c)) for c in claimers for _ in range(3))
        )
    assert [r.status_code for r in responses] == [200] * 18
    handed = [r.json()["one_time_prekey"] for r in responses]
    given = [h["key_id"] for h in handed if h is not None]
    assert len(given) == 5 and len(set(given)) == 5
    # Every bundle is usable: the signed prekey is always there, with its signature.
    published = keys["signed_prekey"]
    assert all(r.json()["signed_prekey"] == published for r in responses)
    with server.client() as client:
        assert remaining(client, owner) == 25


def test_past_the_budget_the_reference_client_sets_up_with_the_signed_prekey_alone(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(VEIL_ONE_TIME_PREKEYS_PER_HOUR="1", **LIMITS)
    clients = Clients(server, tmp_path)
    try:
        alice, bob = clients.new("alice"), clients.new("bob")
        with server.client() as client:  # a stranger spends the budget of Bob's device
            stranger = device(client)
            url = f"/v1/users/{bob.user_id}/devices/{bob.device_id}/claim"
            assert client.post(url, headers=bearer(stranger)).json()["one_time_prekey"] is not None
            after = client.post(url, headers=bearer(stranger)).json()
            assert after["one_time_prekey"] is None
            assert after["signed_prekey"]["public_key"]
        left = bob.publish_more_prekeys_if_low(0)  # threshold 0: only reads the count
        assert alice.send_device_payload(bob.user_id, b"hello without a one-time prekey") == 1
        assert bob.publish_more_prekeys_if_low(0) == left  # Alice's set-up took none
        received = bob.fetch_device_messages()
        assert [(m.content_type, m.error) for m in received] == [
            ("session_init", None),
            ("session_message", None),
        ]
        assert received[1].plaintext == b"hello without a one-time prekey"
        # And the session works both ways.
        assert bob.send_device_payload(alice.user_id, b"hello back") == 1
        assert [m.plaintext for m in alice.fetch_device_messages()] == [b"hello back"]
    finally:
        clients.close()


async def test_the_owner_hears_prekeys_low_while_an_hour_of_claims_is_left(
    make_server: ServerFactory,
) -> None:
    """The threshold is the hourly budget (20 here): at the fastest rate strangers may claim, the
    owner still has an hour to upload more before the last one-time prekey is gone."""
    server = make_server(VEIL_ONE_TIME_PREKEYS_PER_HOUR="20", **LIMITS)
    with server.client() as client:
        owner, claimer = device(client), device(client)
        assert client.put("/v1/keys", json=bundle(one_time=25), headers=bearer(owner)).status_code == 200
    async with ws_connect(server, owner) as ws:
        await registered(ws)
        with server.client() as client:
            for _ in range(5):  # 20 left: not yet low
                assert client.post(claim_url(owner), headers=bearer(claimer)).json()["one_time_prekey"]
            assert await nothing_more(ws, "prekeys_low")
            assert client.post(claim_url(owner), headers=bearer(claimer)).json()["one_time_prekey"]
        low = await next_frame(ws, "prekeys_low")
        assert low == {"type": "prekeys_low", "one_time_prekeys": 19}

"""Realtime delivery over real sockets: replay, acks, live fan-out across processes, revocation."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ServerFactory
from tests.support.keys import bundle, random_envelope
from tests.support.messaging import envelope, group, send
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register
from tests.support.ws import messages, next_frame, nothing_more, registered, ws_connect


def user(client: httpx.Client) -> dict[str, Any]:
    return login(client, register(client))


async def test_replay_then_live_and_redelivery_of_unacknowledged(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        conversation = group(client, alice, bob)
        cid, epoch = conversation["conversation_id"], conversation["epoch"]
        sent = [send(client, bob, cid, envelope(epoch)).json() for _ in range(3)]

    async with ws_connect(api, alice) as ws:
        replayed = await messages(ws, 3)
        assert [m["seq"] for m in replayed] == [1, 2, 3]
        assert [m["message_id"] for m in replayed] == [s["message_id"] for s in sent]
        await ws.send(json.dumps({"type": "ack", "conversation_id": cid, "seq": 2}))
        with api.client() as client:
            send(client, bob, cid, envelope(epoch))
        live = await messages(ws, 1)
        assert live[0]["seq"] == 4
        await asyncio.sleep(0.3)  # acks have no reply: let the ack of 2 commit before dropping

    # Dropped before acknowledging 3 and 4: exactly those come again, nothing else.
    async with ws_connect(api, alice) as ws:
        again = await messages(ws, 2)
        assert [m["seq"] for m in again] == [3, 4]
        assert await nothing_more(ws)


async def test_senders_own_devices_receive_and_ws_send_is_idempotent(api: LiveServer) -> None:
    with api.client() as client:
        email = register(client)
        phone, laptop = login(client, email), login(client, email)
        friend = user(client)
        conversation = group(client, phone, friend)
    cid, epoch = conversation["conversation_id"], conversation["epoch"]
    async with ws_connect(api, phone) as ws_phone, ws_connect(api, laptop) as ws_laptop:
        body = envelope(epoch)
        for _ in range(2):  # the retry gets the original result
            await ws_phone.send(json.dumps({"type": "send", "conversation_id": cid, **body}))
        frames = [await next_frame(ws_phone) for _ in range(3)]  # two replies and the message itself
        replies = [f for f in frames if f["type"] == "sent"]
        assert [(r["seq"], r["message_id"]) for r in replies] == [(1, body["message_id"])] * 2
        assert [f["message"]["seq"] for f in frames if f["type"] == "message"] == [1]
        assert [m["seq"] for m in await messages(ws_laptop, 1)] == [1]
        assert await nothing_more(ws_laptop)

        await ws_phone.send(
            json.dumps({"type": "send", "conversation_id": cid, **envelope(epoch), "text": "hi"})
        )
        error = await next_frame(ws_phone, "error")
        assert error["status"] == 422


async def test_handshake_needs_credentials(api: LiveServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(api):
            pass
    assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus) as forged:
        async with ws_connect(api, {"access_token": "not-a-token"}):
            pass
    assert forged.value.response.status_code == 401


async def test_tickets_are_single_use(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
        ticket = client.post("/v1/ws/tickets", headers=bearer(alice))
        assert ticket.status_code == 201
        value = ticket.json()["ticket"]
    async with ws_connect(api, query=f"?ticket={value}") as ws:
        await ws.send(json.dumps({"type": "nonsense"}))
        assert (await next_frame(ws, "error"))["status"] == 422
    with pytest.raises(InvalidStatus) as reused:
        async with ws_connect(api, query=f"?ticket={value}"):
            pass
    assert reused.value.response.status_code == 401
    assert value not in api.logs()


async def test_foreign_origin_is_refused(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(api, alice, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403


async def test_logout_closes_the_socket_with_4401(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
    async with ws_connect(api, alice) as ws:
        with api.client() as client:
            client.post("/v1/auth/logout", headers=bearer(alice))
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(ws, timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401


async def test_a_newer_connection_of_the_device_replaces_the_older(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
    async with ws_connect(api, alice) as first, ws_connect(api, alice) as second:
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(first, timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4409
        await second.send(json.dumps({"type": "nonsense"}))
        assert (await next_frame(second, "error"))["status"] == 422


async def test_fan_out_across_processes(make_server: ServerFactory) -> None:
    first = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    second = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with first.client() as client:
        alice, bob = user(client), user(client)
        conversation = group(client, alice, bob)
    cid, epoch = conversation["conversation_id"], conversation["epoch"]
    async with ws_connect(first, alice) as ws:
        with second.client() as client:
            for _ in range(5):
                assert send(client, bob, cid, envelope(epoch)).status_code == 201
        assert [m["seq"] for m in await messages(ws, 5)] == [1, 2, 3, 4, 5]


async def test_removed_member_stops_receiving_at_once(api: LiveServer) -> None:
    with api.client() as client:
        owner, alice, bob = user(client), user(client), user(client)
        conversation = group(client, owner, alice, bob)
        cid = conversation["conversation_id"]
    async with ws_connect(api, alice) as ws:
        await registered(ws)
        with api.client() as client:
            client.delete(f"/v1/conversations/{cid}/members/{alice['user_id']}", headers=bearer(owner))
            event = await next_frame(ws, "membership")
            assert event["kind"] == "removed"
            assert event["user_id"] == alice["user_id"]
            epoch = client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["epoch"]
            assert send(client, bob, cid, envelope(epoch)).status_code == 201
        assert await nothing_more(ws)


async def test_device_messages_travel_on_the_socket(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        client.put("/v1/keys", json=bundle(), headers=bearer(bob))
        envelopes = [random_envelope(bob["session_id"]) for _ in range(2)]
        client.post(
            "/v1/devices/messages",
            json={"content_type": "session_init", "messages": envelopes},
            headers=bearer(alice),
        )
    async with ws_connect(api, bob) as ws:
        first = (await next_frame(ws, "device_message"))["message"]
        second = (await next_frame(ws, "device_message"))["message"]
        assert [first["ciphertext"], second["ciphertext"]] == [e["ciphertext"] for e in envelopes]
        await ws.send(json.dumps({"type": "ack_device", "id": first["id"]}))
        with api.client() as client:
            client.post(
                "/v1/devices/messages",
                json={"content_type": "session_message", "messages": [random_envelope(bob["session_id"])]},
                headers=bearer(alice),
            )
        assert (await next_frame(ws, "device_message"))["message"]["content_type"] == "session_message"
    async with ws_connect(api, bob) as ws:
        redelivered = [(await next_frame(ws, "device_message"))["message"]["id"] for _ in range(2)]
        assert first["id"] not in redelivered


async def test_sigterm_closes_sockets_with_1001(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
    async with ws_connect(api, alice) as ws:
        api.terminate()
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(ws, timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
    assert api.wait(20) == 0


async def test_killed_server_loses_no_acknowledged_message(make_server: ServerFactory) -> None:
    doomed = make_server(VEIL_RATE_LIMITS="off")
    with doomed.client() as client:
        alice, bob = user(client), user(client)
        conversation = group(client, alice, bob)
    cid, epoch = conversation["conversation_id"], conversation["epoch"]
    accepted = []
    async with ws_connect(doomed, alice) as ws:
        with doomed.client() as client:
            for _ in range(20):
                accepted.append(send(client, bob, cid, envelope(epoch)).json()["seq"])
        got = await messages(ws, 5)
        await ws.send(json.dumps({"type": "ack", "conversation_id": cid, "seq": got[-1]["seq"]}))
        await next_frame(ws, "message")
        await asyncio.sleep(0.5)  # acks have no reply; give this one time to commit
        os.kill(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait(10)

    survivor = make_server(VEIL_RATE_LIMITS="off")
    async with ws_connect(survivor, alice) as ws:
        replay = await messages(ws, 15)
        # Everything acknowledged by the server (201) and not acknowledged by the client arrives.
        assert [m["seq"] for m in replay] == accepted[5:]
        assert await nothing_more(ws)


async def test_key_events_reach_contacts_and_the_owner(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        group(client, alice, bob)
        client.put("/v1/keys", json=bundle(one_time=10), headers=bearer(bob))
    async with ws_connect(api, alice) as ws_alice, ws_connect(api, bob) as ws_bob:
        await registered(ws_alice)
        await registered(ws_bob)
        with api.client() as client:
            assert (
                client.put(
                    "/v1/keys", json=bundle(one_time=0, signed_prekey_id=7), headers=bearer(bob)
                ).status_code
                == 200
            )
            changed = await next_frame(ws_alice, "keys_changed")
            assert changed["user_id"] == bob["user_id"]
            assert changed["device_id"] == bob["session_id"]
            assert changed["change"] in ("identity_changed", "signed_prekey_changed")
            claim = f"/v1/users/{bob['user_id']}/devices/{bob['session_id']}/claim"
            assert client.post(claim, headers=bearer(alice)).status_code == 200
            low = await next_frame(ws_bob, "prekeys_low")
            assert low["one_time_prekeys"] < 10


async def test_http_and_websocket_sends_share_one_budget(make_server: ServerFactory) -> None:
    server = make_server(VEIL_MESSAGES_PER_MINUTE="4", VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with server.client() as client:
        alice, bob = user(client), user(client)
        conversation = group(client, alice, bob)
        cid, epoch = conversation["conversation_id"], conversation["epoch"]
        for _ in range(2):
            assert send(client, alice, cid, envelope(epoch)).status_code == 201
    async with ws_connect(server, alice) as ws:
        replies = []
        for _ in range(3):
            await ws.send(json.dumps({"type": "send", "conversation_id": cid, **envelope(epoch)}))
            replies.append(
                await next_frame(ws, "sent") if len(replies) < 2 else await next_frame(ws, "error")
            )
        assert [r["type"] for r in replies] == ["sent", "sent", "error"]
        assert replies[2]["status"] == 429


async def test_a_socket_closes_when_its_access_token_expires(make_server: ServerFactory) -> None:
    server = make_server(VEIL_ACCESS_TTL="2", VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with server.client() as client:
        alice = user(client)
    async with ws_connect(server, alice) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(ws, timeout=6)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401

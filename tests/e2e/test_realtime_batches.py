"""`GET /v1/ws?batch=true`: messages in `messages` frames, bounded in count and size."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from tests.conftest import ServerFactory
from tests.support.messaging import envelope, group, send
from tests.support.server import LiveServer
from tests.support.users import login, register
from tests.support.ws import next_frame, nothing_more, registered, ws_connect

BATCH = {"query": "?batch=true", "max_size": 2**20}


def user(client: httpx.Client) -> dict[str, Any]:
    return login(client, register(client))


def alice_and_bob(client: httpx.Client) -> tuple[dict[str, Any], dict[str, Any], str, int]:
    """Two new users in a new group: (alice, bob, conversation_id, epoch)."""
    alice, bob = user(client), user(client)
    conversation = group(client, alice, bob)
    return alice, bob, conversation["conversation_id"], conversation["epoch"]


async def frames_until(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    """Frames carrying messages until `count` messages came; any `message` frame fails the test."""
    frames: list[dict[str, Any]] = []
    while sum(len(f["messages"]) for f in frames) < count:
        frame = await next_frame(ws)
        assert frame["type"] != "message", "a batching socket got a single-message frame"
        if frame["type"] == "messages":
            frames.append(frame)
    return frames


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for f in frames for m in f["messages"]]


async def test_replay_and_live_messages_come_in_batches(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob, cid, epoch = alice_and_bob(client)
        sent = [send(client, bob, cid, envelope(epoch)).json() for _ in range(5)]

    async with ws_connect(api, alice, **BATCH) as ws:
        replayed = await frames_until(ws, 5)
        # The replay is read in one pass, so it is one frame.
        assert len(replayed) == 1
        assert seqs(replayed) == [1, 2, 3, 4, 5]
        assert [m["message_id"] for m in replayed[0]["messages"]] == [s["message_id"] for s in sent]
        assert {m["conversation_id"] for m in replayed[0]["messages"]} == {cid}

        with api.client() as client:
            live = send(client, bob, cid, envelope(epoch)).json()
        (frame,) = await frames_until(ws, 1)
        assert [m["message_id"] for m in frame["messages"]] == [live["message_id"]]
        # One cumulative ack for the whole batch.
        await ws.send(json.dumps({"type": "ack", "conversation_id": cid, "seq": 6}))
        await asyncio.sleep(0.3)  # acks have no reply: let it commit before dropping

    async with ws_connect(api, alice) as ws:  # without batch: single frames, and nothing acked again
        await registered(ws)
        assert await nothing_more(ws)
        assert await nothing_more(ws, "messages", wait=0.1)


async def test_a_batch_holds_at_most_100_messages(make_server: ServerFactory) -> None:
    server = make_server(VEIL_AUTH_RATE="10000", VEIL_AUTH_BURST="10000", VEIL_MESSAGES_PER_MINUTE="1000")
    with server.client() as client:
        alice, bob, cid, epoch = alice_and_bob(client)
        for _ in range(130):
            assert send(client, bob, cid, envelope(epoch, size=16)).status_code == 201

    async with ws_connect(server, alice, **BATCH) as ws:
        frames = await frames_until(ws, 130)
    assert [len(f["messages"]) for f in frames] == [100, 30]
    assert seqs(frames) == list(range(1, 131))


async def test_a_batch_holds_at_most_256_kib(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob, cid, epoch = alice_and_bob(client)
        for _ in range(5):  # 60 KiB of ciphertext, 80 KiB in base64: three fit in a frame
            assert send(client, bob, cid, envelope(epoch, size=60 * 1024)).status_code == 201

    async with ws_connect(api, alice, **BATCH) as ws:
        texts = []
        while len(texts) < 2:
            texts.append(await asyncio.wait_for(ws.recv(), 5))
            if json.loads(texts[-1])["type"] != "messages":
                texts.pop()
    frames = [json.loads(text) for text in texts]
    assert [len(f["messages"]) for f in frames] == [3, 2]
    assert seqs(frames) == [1, 2, 3, 4, 5]
    assert all(len(text.encode()) <= 256 * 1024 for text in texts)


@pytest.mark.parametrize("query", ["?batch=yes", "?batch=", "?batch=true&batch=false", "?batch=TRUE"])
async def test_a_malformed_batch_parameter_is_refused_with_422(api: LiveServer, query: str) -> None:
    with api.client() as client:
        alice = user(client)
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(api, alice, query=query):
            pass
    response = refused.value.response
    assert response.status_code == 422
    problem = json.loads(response.body or b"{}")
    assert problem["errors"] == [{"loc": ["query", "batch"], "msg": "Must be true or false, given once."}]


async def test_batch_false_keeps_single_message_frames(api: LiveServer) -> None:
    with api.client() as client:
        alice, bob, cid, epoch = alice_and_bob(client)
        for _ in range(2):
            send(client, bob, cid, envelope(epoch))
    async with ws_connect(api, alice, query="?batch=false") as ws:
        first, second = await next_frame(ws, "message"), await next_frame(ws, "message")
        assert [first["message"]["seq"], second["message"]["seq"]] == [1, 2]

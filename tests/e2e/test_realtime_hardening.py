"""WebSocket abuse and lost notifications, against real server processes (issue 13, items 5, 6, 9).

A socket's right to exist must not hang on one notification arriving: these tests make the server
miss notifications for real (its LISTEN connection goes silent, or a row changes with nobody
notifying) and show that sessions, memberships and token lifetimes still hold.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ServerFactory
from tests.support.messaging import envelope, group, send
from tests.support.server import LiveServer
from tests.support.users import bearer, login, register
from tests.support.ws import messages, next_frame, nothing_more, registered, ws_connect
from veil.core.listener import APPLICATION_NAME
from veil.devstack.stack import DevStack

FAST_AUTH = {"VEIL_AUTH_RATE": "1000", "VEIL_AUTH_BURST": "1000"}

# The server's LISTEN connection, by the name it gives itself.
_LISTENERS = """
    SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1
"""


def user(client: httpx.Client) -> dict[str, Any]:
    return login(client, register(client))


async def close_code(ws: ClientConnection, within: float) -> int:
    """Wait for the server to close the socket (skipping frames); its close code."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(within):  # a TimeoutError fails the test: still open
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code


async def still_open(ws: ClientConnection, wait: float) -> bool:
    try:
        async with asyncio.timeout(wait):
            while True:
                await ws.recv()
    except TimeoutError:
        return True
    except ConnectionClosed:
        return False


def token_exp(access_token: str) -> int:
    payload = access_token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


@contextlib.asynccontextmanager
async def listeners_frozen(database_url: str) -> AsyncIterator[None]:
    """Freeze the server's LISTEN backends (SIGSTOP), as a network blackhole would: notifications
    committed meanwhile never reach the server. The server notices through its liveness probe,
    gives up on the connection and listens again on a new one; the frozen backends are ended
    afterwards without ever sending what they held."""
    admin = await asyncpg.connect(database_url)
    frozen: list[int] = []
    try:
        pids = [row["pid"] for row in await admin.fetch(_LISTENERS, APPLICATION_NAME)]
        assert len(pids) == 1, "expected the process's one LISTEN connection"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(pid)
        yield
    finally:
        for pid in frozen:
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        await admin.close()


# --- item 5: binary frames ---------------------------------------------------------------------


async def test_a_binary_frame_closes_with_1003_and_logs_one_line(api: LiveServer) -> None:
    with api.client() as client:
        alice = user(client)
    async with ws_connect(api, alice) as ws:
        # A text frame the server cannot parse is answered, and the socket stays usable.
        await ws.send("this is not json")
        assert (await next_frame(ws, "error"))["status"] == 400
        await ws.send(json.dumps({"type": "nonsense"}))
        assert (await next_frame(ws, "error"))["status"] == 422

        await ws.send(b"\x00\x01binary")
        assert await close_code(ws, within=5) == 1003
    await asyncio.sleep(0.3)  # let the log line be written
    logs = api.logs()
    assert "Traceback" not in logs
    assert "KeyError" not in logs
    assert logs.count("ws_frame_refused") == 1


# --- item 6: lost notifications, periodic re-checks, token lifetime ----------------------------


async def test_a_silent_listener_loses_no_revocation_and_no_removal(
    make_server: ServerFactory, database_url: str, stack: DevStack
) -> None:
    if stack.postgres is None:
        pytest.skip("freezes backends of the embedded PostgreSQL server")
    # No periodic re-check during the test: only the listener's reconnection may catch up.
    server = make_server(VEIL_WS_RECHECK_SECONDS="3600", **FAST_AUTH)
    with server.client() as client:
        owner, alice, bob = user(client), user(client), user(client)
        cid = group(client, owner, alice, bob)["conversation_id"]
    async with (
        ws_connect(server, owner) as ws_owner,
        ws_connect(server, alice) as ws_alice,
        ws_connect(server, bob) as ws_bob,
    ):
        for ws in (ws_owner, ws_alice, ws_bob):
            await registered(ws)
        async with listeners_frozen(database_url):
            with server.client() as client:
                # Both notifications are sent and lost: the server's listener is not listening.
                assert client.post("/v1/auth/logout", headers=bearer(bob)).status_code == 204
                removed = client.delete(
                    f"/v1/conversations/{cid}/members/{alice['user_id']}", headers=bearer(owner)
                )
                assert removed.status_code == 204
            assert await still_open(ws_bob, 0.3), "the revocation was not lost; the test proves nothing"
            # The listener's probe times out (5 s + 5 s at most), it reconnects and re-checks.
            assert await close_code(ws_bob, within=20) == 4401

        with server.client() as client:
            epoch = client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["epoch"]
            assert send(client, owner, cid, envelope(epoch)).status_code == 201
        assert [m["seq"] for m in await messages(ws_owner, 1)] == [1]
        assert await nothing_more(ws_alice, wait=1.5)


async def test_a_removal_nobody_was_notified_of_stops_live_delivery(
    make_server: ServerFactory, database_url: str
) -> None:
    server = make_server(VEIL_WS_RECHECK_SECONDS="3600", **FAST_AUTH)
    with server.client() as client:
        owner, alice = user(client), user(client)
        conversation = group(client, owner, alice)
    cid, epoch = conversation["conversation_id"], conversation["epoch"]
    async with ws_connect(server, owner) as ws_owner, ws_connect(server, alice) as ws_alice:
        await registered(ws_owner)
        await registered(ws_alice)
        # The membership ends without a notification reaching this process.
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(
                "DELETE FROM members WHERE conversation_id = $1 AND user_id = $2",
                uuid.UUID(cid),
                uuid.UUID(alice["user_id"]),
            )
        finally:
            await admin.close()
        with server.client() as client:
            assert send(client, owner, cid, envelope(epoch)).status_code == 201
        assert [m["seq"] for m in await messages(ws_owner, 1)] == [1]
        assert await nothing_more(ws_alice, wait=1.5)


async def test_periodic_recheck_closes_a_session_that_expired_unnotified(
    make_server: ServerFactory, database_url: str
) -> None:
    server = make_server(VEIL_WS_RECHECK_SECONDS="1", **FAST_AUTH)
    with server.client() as client:
        alice, bob = user(client), user(client)
    async with ws_connect(server, alice) as ws_alice, ws_connect(server, bob) as ws_bob:
        await registered(ws_alice)
        await registered(ws_bob)
        # A session's absolute lifetime ends with no event at all: nothing is notified.
        admin = await asyncpg.connect(database_url)
        try:
            await admin.execute(
                "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1",
                uuid.UUID(alice["session_id"]),
            )
        finally:
            await admin.close()
        assert await close_code(ws_alice, within=5) == 4401
        assert await still_open(ws_bob, 1.5)


async def test_header_and_ticket_sockets_close_when_their_token_expires(make_server: ServerFactory) -> None:
    server = make_server(VEIL_ACCESS_TTL="6", **FAST_AUTH)
    with server.client() as client:
        email = register(client)
        phone, browser = login(client, email), login(client, email)
        issued = client.post("/v1/ws/tickets", headers=bearer(browser))
        assert issued.status_code == 201
    ticket = issued.json()["ticket"]
    # The ticket binds the token's expiry: a ticket with a later one written in is no ticket.
    random_part, _, exp = ticket.rpartition(".")
    assert int(exp) == token_exp(browser["access_token"])
    with pytest.raises(InvalidStatus) as forged:
        async with ws_connect(server, query=f"?ticket={random_part}.{int(exp) + 3600}"):
            pass
    assert forged.value.response.status_code == 401

    async with (
        ws_connect(server, phone) as ws_phone,
        ws_connect(server, query=f"?ticket={ticket}") as ws_browser,
    ):
        codes = await asyncio.gather(close_code(ws_phone, within=12), close_code(ws_browser, within=12))
        closed_at = time.time()
    assert list(codes) == [4401, 4401]
    # Closed because the tokens expired, not earlier.
    assert closed_at >= min(token_exp(phone["access_token"]), int(exp)) - 1


# --- item 9: WebSocket rate limits -------------------------------------------------------------


async def test_tickets_are_rate_limited_per_user(make_server: ServerFactory) -> None:
    server = make_server(VEIL_WS_TICKETS_PER_MINUTE="2", **FAST_AUTH)
    with server.client() as client:
        alice, bob = user(client), user(client)
        statuses = [client.post("/v1/ws/tickets", headers=bearer(alice)).status_code for _ in range(2)]
        refused = client.post("/v1/ws/tickets", headers=bearer(alice))
        assert statuses == [201, 201]
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["status"] == 429
        # Another user's budget is their own.
        assert client.post("/v1/ws/tickets", headers=bearer(bob)).status_code == 201


async def test_handshakes_are_rate_limited_per_user_and_per_ip(make_server: ServerFactory) -> None:
    server = make_server(VEIL_WS_CONNECTS_PER_MINUTE="2", VEIL_WS_CONNECTS_PER_IP_PER_MINUTE="4", **FAST_AUTH)
    with server.client() as client:
        alice, bob = user(client), user(client)

    async def handshake(pair: dict[str, Any] | None) -> int:
        try:
            async with ws_connect(server, pair):
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code

    # Per user: alice's third handshake within the minute is refused, bob is not affected.
    assert [await handshake(alice) for _ in range(3)] == [101, 101, 429]
    assert await handshake(bob) == 101
    # Per IP: the fifth attempt from this address (alice's refusal counted too) is refused, even
    # with credentials that are within their own budget, and so are attempts without any.
    assert await handshake(bob) == 429
    assert await handshake(None) == 429

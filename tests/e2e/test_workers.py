"""`VEIL_WORKERS`: several processes serving one port (veil/workers.py). They share only
PostgreSQL, so a message sent through one is delivered by another; a worker that dies is replaced
without the port going away; SIGTERM drains them all."""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.messaging import envelope, group, send
from tests.support.procs import children, tcp_sockets
from tests.support.server import LiveServer
from tests.support.users import login, register
from tests.support.waiting import until
from tests.support.ws import messages, registered, ws_connect
from veil.core.listener import APPLICATION_NAME


def listening_workers(server: LiveServer, count: int) -> set[int]:
    """The supervisor's children that listen on the server's port, once there are `count`."""
    deadline = time.monotonic() + 30
    while True:
        found = {
            pid
            for pid in children(server.process.pid)
            if any(s.listening and s.local_port == server.port for s in tcp_sockets(pid))
        }
        if len(found) == count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} of {count} workers listening"
        time.sleep(0.2)


def holder(workers: set[int], client_port: int) -> int:
    """The worker holding the server side of the connection from `client_port`."""
    for pid in workers:
        if any(s.remote_port == client_port for s in tcp_sockets(pid)):
            return pid
    raise AssertionError(f"no worker holds the connection from port {client_port}")


async def test_workers_share_the_port_and_deliver_each_others_messages(
    make_server: Any, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    server: LiveServer = make_server(VEIL_WORKERS="2", VEIL_AUTH_RATE="10000", VEIL_AUTH_BURST="10000")
    workers = listening_workers(server, 2)
    assert not any(s.listening for s in tcp_sockets(server.process.pid))  # it only holds the port
    # Each worker waits for notifications on one connection, whatever listens inside it.
    listeners = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        APPLICATION_NAME,
    )
    assert listeners == 2

    with server.client() as client:
        email = register(client)
        alice = login(client, register(client))
        devices = [login(client, email) for _ in range(12)]
        conversation = group(client, alice, devices[0])
    cid, epoch = conversation["conversation_id"], conversation["epoch"]

    async with AsyncExitStack() as stack:
        sockets, held_by = [], set()
        for device in devices:  # until both workers hold some of them (the kernel hashes ports)
            ws = await stack.enter_async_context(ws_connect(server, device))
            await registered(ws)
            sockets.append(ws)
            held_by.add(holder(workers, ws.local_address[1]))
            if len(held_by) == 2 and len(sockets) >= 4:
                break
        assert held_by == workers

        sent = []
        for _ in range(3):  # each send on a new connection, so on either worker
            with server.client() as client:
                reply = send(client, alice, cid, envelope(epoch))
                assert reply.status_code == 201, reply.text
                sent.append(reply.json()["message_id"])
        for ws in sockets:
            assert [m["message_id"] for m in await messages(ws, 3)] == sent
            await ws.send(json.dumps({"type": "ack", "conversation_id": cid, "seq": 3}))


async def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(make_server: Any) -> None:
    server: LiveServer = make_server(VEIL_WORKERS="2")
    victim, survivor = sorted(listening_workers(server, 2))
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        found = listening_workers(server, 2)
        return survivor in found and victim not in found and victim not in children(server.process.pid)

    await until(replaced, "a new worker replaced the dead one", seconds=30)
    with server.client() as client:
        for _ in range(10):  # fresh connections land on both workers; all are answered
            assert client.get("/readyz", headers={"Connection": "close"}).status_code == 200
    assert "worker_died" in server.logs()

    workers = listening_workers(server, 2)
    server.terminate()
    assert server.wait(60) == 0
    for pid in workers:  # each drained and exited: none is left behind holding the port
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()

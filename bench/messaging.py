"""Messaging scenarios for `make bench`.

(a) recipients offline: many senders over HTTP into 1:1 conversations, nobody connected;
(b) groups of 10 with every member online on a WebSocket, senders on their sockets at fixed
    offered rates: send latency (send frame due -> `sent` reply), send-to-delivery latency (due ->
    the message's frame at every other member) and deliveries lost;
(c) idle sockets held by one server process, and the server's memory per socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tests.support.procs import children
from tests.support.server import LiveServer
from websockets.asyncio.client import ClientConnection, connect

from bench import signup
from veil.core.security.tokens import AccessTokens, SigningKeys

PASSWORD = "benchmark password 42"


@dataclass
class Latencies:
    samples: list[float]

    def pct(self, q: float) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class ScenarioResult:
    name: str
    messages: int
    seconds: float
    send: Latencies
    delivery: Latencies | None = None
    deliveries: int = 0
    errors: int = 0
    # Deliveries owed (every stored message to every other member) that never came.
    lost: int | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _envelope(epoch: int) -> dict[str, Any]:
    import base64

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return {
        "message_id": str(uuid.uuid4()),
        "ciphertext": b64(os.urandom(160)),
        "nonce": b64(os.urandom(12)),
        "auth_tag": b64(os.urandom(16)),
        "content_type": "text",
        "key_epoch": epoch,
    }


async def _users(client: httpx.AsyncClient, count: int, mail_dir: Path) -> list[dict[str, Any]]:
    """`count` new verified users, each signed in once (their token pairs); the sign-up codes are
    read from the stack's mail sink in `mail_dir`."""
    emails = [f"bench-{i}-{os.urandom(4).hex()}@example.org" for i in range(count)]
    await signup.sign_up(client, mail_dir, emails, PASSWORD)

    async def one(email: str) -> dict[str, Any]:
        response = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        response.raise_for_status()
        pair: dict[str, Any] = response.json()
        return pair

    semaphore = asyncio.Semaphore(4)

    async def bounded(email: str) -> dict[str, Any]:
        async with semaphore:
            return await one(email)

    return list(await asyncio.gather(*(bounded(email) for email in emails)))


def _auth(pair: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


class RawHttpClient:
    """A lean keep-alive HTTPS/1.1 client for the load generator: httpx costs the generator a
    whole core at a few hundred requests/s on this machine, which would measure the client, not
    Veil. One instance is one connection, used by one task at a time."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self._port = port
        self._context = context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, token: str) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                "127.0.0.1", self._port, ssl=self._context, server_hostname="localhost"
            )
        assert self._reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self._writer.write(head + body)
        status_line = await self._reader.readuntil(b"\r\n")
        length = 0
        while (line := await self._reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self._reader.readexactly(length)
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def offline_recipients(
    server: LiveServer, senders: int, seconds: float, mail_dir: Path
) -> ScenarioResult:
    async with server.async_client() as client:
        people = await _users(client, senders * 2, mail_dir)
        pairs = []
        for i in range(senders):
            sender, recipient = people[2 * i], people[2 * i + 1]
            created = await client.post(
                "/v1/conversations",
                json={"type": "direct", "member_id": recipient["user_id"]},
                headers=_auth(sender),
            )
            pairs.append((sender, created.json()["conversation_id"]))
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    context = server.ssl_context()

    async def sender_loop(sender: dict[str, Any], conversation_id: str) -> None:
        nonlocal errors
        connection = RawHttpClient(server.port, context)
        path = f"/v1/conversations/{conversation_id}/messages"
        try:
            while time.perf_counter() < deadline:
                body = json.dumps(_envelope(0)).encode()
                started = time.perf_counter()
                if await connection.post(path, body, sender["access_token"]) == 201:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            await connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(sender_loop(s, c) for s, c in pairs))
    elapsed = time.perf_counter() - began
    return ScenarioResult(
        f"(a) {senders} HTTP senders, recipients offline",
        len(latencies),
        elapsed,
        Latencies(latencies),
        errors=errors,
    )


def _ws(server: LiveServer, pair: dict[str, Any], context: ssl.SSLContext, batch: bool = False) -> Any:
    base = f"ws://127.0.0.1:{server.port}" if server.plain else f"wss://localhost:{server.port}"
    return connect(
        f"{base}/v1/ws" + ("?batch=true" if batch else ""),
        ssl=None if server.plain else context,
        additional_headers=_auth(pair),
        proxy=None,
        max_queue=None,
        ping_interval=None,
        compression=None,  # ciphertext does not compress (and the server does not offer it)
    )


@dataclass
class _Step:
    """What one rate step of scenario (b) saw: when each message was due, the replies, and every
    delivery (once per socket and message)."""

    due: dict[str, float]
    send_latency: list[float]
    delivery_latency: list[float]
    delivered: set[tuple[int, str]]
    errors: int = 0


class _Member:
    """One member's socket: counts deliveries of others' messages and acknowledges them (once per
    frame: acks are cumulative), and the replies to its own sends."""

    def __init__(self, index: int, ws: ClientConnection, device: str, cid: str, epoch: int) -> None:
        self.index, self.ws, self.device, self.cid, self.epoch = index, ws, device, cid, epoch
        self.step: _Step | None = None

    async def read_forever(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            now = time.perf_counter()
            step = self.step
            if frame["type"] in ("message", "messages"):
                batch = frame["messages"] if frame["type"] == "messages" else [frame["message"]]
                for message in batch:
                    due = step.due.get(message["message_id"]) if step else None
                    key = (self.index, message["message_id"])
                    others = message["sender_device_id"] != self.device
                    if step and due is not None and others and key not in step.delivered:
                        step.delivered.add(key)
                        step.delivery_latency.append(now - due)
                await self.ws.send(
                    json.dumps({"type": "ack", "conversation_id": self.cid, "seq": batch[-1]["seq"]})
                )
            elif frame["type"] == "sent" and step is not None:
                due = step.due.get(frame["message_id"])
                if due is not None:
                    step.send_latency.append(now - due)
            elif frame["type"] == "error" and step is not None:
                step.errors += 1


async def online_groups(
    server: LiveServer,
    groups: int,
    size: int,
    seconds: float,
    mail_dir: Path,
    rates: tuple[int, ...],
    batch: bool,
) -> list[ScenarioResult]:
    """Scenario (b): `groups` groups of `size`, every member online; two members of each group send
    on their sockets at a fixed total rate (open loop: a slow reply does not slow the arrivals, and
    latencies run from when a message was due), one step per rate."""
    context = server.ssl_context()
    async with server.async_client() as client:
        people = await _users(client, groups * size, mail_dir)
        conversations = []
        for g in range(groups):
            members = people[g * size : (g + 1) * size]
            owner = members[0]
            cid = (
                await client.post("/v1/conversations", json={"type": "group"}, headers=_auth(owner))
            ).json()["conversation_id"]
            for member in members[1:]:
                await client.post(
                    f"/v1/conversations/{cid}/invitations",
                    json={"user_id": member["user_id"]},
                    headers=_auth(owner),
                )
                await client.post(f"/v1/conversations/{cid}/invitations/accept", headers=_auth(member))
            epoch = (await client.get(f"/v1/conversations/{cid}", headers=_auth(owner))).json()["epoch"]
            conversations.append((cid, epoch, members))

    sockets: list[_Member] = []
    senders: list[_Member] = []
    for cid, epoch, members in conversations:
        for index, member in enumerate(members):
            ws = await _ws(server, member, context, batch)
            sockets.append(_Member(len(sockets), ws, member["session_id"], cid, epoch))
            if index < 2:
                senders.append(sockets[-1])
    readers = [asyncio.create_task(m.read_forever()) for m in sockets]
    results = []
    try:
        for rate in rates:
            results.append(await _group_step(sockets, senders, size, rate, seconds, batch))
    finally:
        for reader in readers:
            reader.cancel()
        for socket in sockets:
            await socket.ws.close()
    return results


async def _group_step(
    sockets: list[_Member], senders: list[_Member], size: int, rate: int, seconds: float, batch: bool
) -> ScenarioResult:
    step = _Step({}, [], [], set())
    for member in sockets:
        member.step = step
    began = time.perf_counter()
    count = 0
    while (due := began + count / rate) < began + seconds:
        if (delay := due - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        sender = senders[count % len(senders)]
        body = _envelope(sender.epoch)
        step.due[body["message_id"]] = due
        await sender.ws.send(json.dumps({"type": "send", "conversation_id": sender.cid, **body}))
        count += 1
    elapsed = time.perf_counter() - began
    # Every stored message must reach the other members of its group: wait for the stragglers.
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:
        expected = len(step.send_latency) * (size - 1)
        if len(step.send_latency) + step.errors == count and len(step.delivered) >= expected:
            break
        await asyncio.sleep(0.1)
    for member in sockets:
        member.step = None
    return ScenarioResult(
        f"(b) {len(sockets) // size} groups of {size}, all online, {rate}/s offered"
        + (", batched frames" if batch else ", one frame per message"),
        len(step.send_latency),
        elapsed,
        Latencies(step.send_latency),
        Latencies(step.delivery_latency),
        len(step.delivered),
        step.errors,
        lost=len(step.send_latency) * (size - 1) - len(step.delivered),
    )


def _rss_kib(pid: int) -> int:
    """The resident memory of the server: its process and, with VEIL_WORKERS, its workers."""
    total = 0
    for process in (pid, *children(pid)):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


async def idle_sockets(
    server: LiveServer, database_url: str, keys_file: Path, count: int, mail_dir: Path
) -> tuple[int, float, float]:
    """Open `count` sockets of distinct devices; return (held, server MiB, KiB per socket).

    The devices' sessions are inserted straight into the database and their access tokens signed
    with the stack's keys: ten thousand Argon2 logins would measure hashing, not sockets.
    """
    async with server.async_client() as client:
        owner = (await _users(client, 1, mail_dir))[0]
    tokens = AccessTokens(SigningKeys.load(keys_file), issuer="veil", audience="veil-api", ttl_seconds=900)
    now = datetime.now(UTC)
    sessions = [uuid.uuid4() for _ in range(count)]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            """INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at)
               VALUES ($1, $2, $3, $3, $4)""",
            [(sid, uuid.UUID(owner["user_id"]), now, now + timedelta(days=1)) for sid in sessions],
        )
    finally:
        await conn.close()
    pairs = [{"access_token": tokens.issue(uuid.UUID(owner["user_id"]), sid, now)} for sid in sessions]
    context = server.ssl_context()
    before = _rss_kib(server.process.pid)
    sockets = []
    semaphore = asyncio.Semaphore(64)

    async def open_one(pair: dict[str, Any]) -> None:
        async with semaphore:
            sockets.append(await _ws(server, pair, context))

    await asyncio.gather(*(open_one(p) for p in pairs))
    await asyncio.sleep(3)
    after = _rss_kib(server.process.pid)
    for ws in sockets:
        await ws.close()
    return len(sockets), after / 1024, (after - before) / max(1, len(sockets))

"""Senders and receivers for fault tests: senders retry with the same message_id until a copy
acknowledges; receivers acknowledge what they get and reconnect through the gateway when their
socket goes, so what matters can be counted afterwards."""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.gateway import Topology
from tests.support.messaging import envelope


@dataclass
class Sender:
    pair: dict[str, Any]
    conversation_id: str
    epoch: int
    acknowledged: set[str] = field(default_factory=set)
    retries: int = 0

    async def send(self, client: httpx.AsyncClient, count: int, pause: float = 0.01) -> None:
        headers = {"Authorization": f"Bearer {self.pair['access_token']}"}
        for _ in range(count):
            body = envelope(key_epoch=self.epoch)
            for _attempt in range(100):
                try:
                    response = await client.post(
                        f"/v1/conversations/{self.conversation_id}/messages", json=body, headers=headers
                    )
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code in (200, 201):
                    self.acknowledged.add(body["message_id"])
                    break
                assert response is None or response.status_code >= 500, response.text
                self.retries += 1
                await asyncio.sleep(0.1)  # the same message_id again: a retry, never a duplicate
            else:
                raise AssertionError("a send was never acknowledged")
            await asyncio.sleep(pause)


@dataclass
class Receiver:
    """One device's socket through the gateway, reconnecting until told to stop."""

    topology: Topology
    pair: dict[str, Any]
    received: set[str] = field(default_factory=set)
    close_codes: list[int | None] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Receive until cancelled."""
        context = ssl.create_default_context(cafile=str(self.topology.ca_file))
        url = f"wss://localhost:{self.topology.gateway.port}/v1/ws"
        headers = {"Authorization": f"Bearer {self.pair['access_token']}"}
        while True:
            try:
                async with connect(url, ssl=context, additional_headers=headers, proxy=None) as ws:
                    await ws.send(json.dumps({"type": "ping?"}))  # answered once registered
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame["type"] == "error":
                            self.connected.set()
                        elif frame["type"] == "message":
                            message = frame["message"]
                            self.received.add(message["message_id"])
                            cid, seq = message["conversation_id"], message["seq"]
                            await ws.send(json.dumps({"type": "ack", "conversation_id": cid, "seq": seq}))
            except ConnectionClosed as closed:
                self.close_codes.append(closed.rcvd.code if closed.rcvd else None)
            except (InvalidStatus, OSError, TimeoutError):
                pass
            await asyncio.sleep(0.2)

    async def wait_for(self, expected: set[str], timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not expected <= self.received:
            if asyncio.get_running_loop().time() > deadline:
                missing = len(expected - self.received)
                raise AssertionError(f"{missing} acknowledged messages never arrived")
            await asyncio.sleep(0.1)

"""WebSocket clients for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from tests.support.server import LiveServer


def ws_connect(server: LiveServer, pair: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {pair['access_token']}"} if pair else {}
    return connect(
        f"wss://localhost:{server.port}/v1/ws{kwargs.pop('query', '')}",
        ssl=server.ssl_context(),
        additional_headers=headers,
        proxy=None,
        **kwargs,
    )


async def next_frame(ws: ClientConnection, kind: str | None = None, timeout: float = 5) -> dict[str, Any]:
    """The next frame (of `kind`, skipping others)."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if kind is None or frame["type"] == kind:
            return frame


async def messages(ws: ClientConnection, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    return [(await next_frame(ws, "message", timeout))["message"] for _ in range(count)]


async def nothing_more(ws: ClientConnection, kind: str = "message", wait: float = 0.7) -> bool:
    try:
        await next_frame(ws, kind, wait)
    except TimeoutError:
        return True
    return False


async def registered(ws: ClientConnection) -> None:
    """Wait until the server has registered this socket (it answers frames only after that):
    live-only events published before would not reach it."""
    await ws.send(json.dumps({"type": "ping?"}))
    await next_frame(ws, "error")

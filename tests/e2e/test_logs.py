"""What the server logs about a client's mistakes: a refused WebSocket handshake is an info line,
not an error an operator would be paged for."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.server import LiveServer
from tests.support.ws import ws_connect


def _records(server: LiveServer) -> list[dict[str, object]]:
    return [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]


async def test_a_refused_handshake_is_logged_at_info(server: LiveServer) -> None:
    for query in ("", "?ticket=not-a-ticket.1"):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(server, query=query):
                pass
        assert refused.value.response.status_code == 401
    deadline = time.monotonic() + 5
    while len([r for r in _records(server) if r["event"] == "ws_handshake_refused"]) < 2:
        assert time.monotonic() < deadline, server.logs()
        await asyncio.sleep(0.05)
    records = _records(server)
    refusals = [r for r in records if r["event"] == "ws_handshake_refused"]
    assert [(r["level"], r["status"]) for r in refusals] == [("info", 401), ("info", 401)]
    assert [r for r in records if r["level"] == "error"] == []
    assert "not-a-ticket" not in server.logs()

"""The device's live connection (`GET /v1/ws`) as the chat needs it: frames in, acks out.

The socket only says *that* something happened; messages are still read and decrypted through
`VeilClient.history`, which also takes in the sender keys queued ahead of them. So a lost frame
costs nothing but latency, and the caller falls back to polling while the socket is down.

It is driven from the caller's thread (no thread of its own besides the keepalive one inside
`websockets`), because `VeilClient` is meant for one thread at a time and supplies the token.
Reconnects back off from 1 to 15 seconds. The server closes a socket when its access token expires
(4401): the next connect presents a fresh one. A newer connection of the same device closes this
one (4409), which is the one failure that is final.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from veil.client.cli.failures import UserError
from veil.client.sdk.http import VeilClient

CLOSE_SESSION_ENDED = 4401
CLOSE_REPLACED = 4409
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 15.0


def websocket_url(base_url: str) -> str:
    """`https://host:port` -> `wss://host:port/v1/ws?batch=true` (and http -> ws): messages that
    are ready together come in one `messages` frame."""
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/ws?batch=true"


def single_frames(frame: dict[str, Any]) -> list[dict[str, Any]]:
    """A `messages` frame as the `message` frames it stands for; any other frame as it is."""
    if frame.get("type") != "messages":
        return [frame]
    batch = frame.get("messages")
    return (
        [{"type": "message", "message": m} for m in batch if isinstance(m, dict)]
        if isinstance(batch, list)
        else []
    )


class LiveFeed:
    def __init__(self, client: VeilClient, base_url: str, tls: ssl.SSLContext | None) -> None:
        self._client = client
        self._url = websocket_url(base_url)
        self._tls = tls if self._url.startswith("wss:") else None
        self._socket: ClientConnection | None = None
        self._next_attempt = 0.0
        self._backoff = _FIRST_BACKOFF

    @property
    def up(self) -> bool:
        return self._socket is not None

    def connect(self) -> bool:
        """Open the socket unless it is open or a retry is not due yet; whether it is open now.

        A refused handshake with 401 means the session is over and propagates (as does a failed
        token refresh); anything else is a network problem to retry later.
        """
        if self._socket is not None:
            return True
        if time.monotonic() < self._next_attempt:
            return False
        headers = {"Authorization": f"Bearer {self._client.access_token()}"}
        try:
            self._socket = connect(
                self._url, ssl=self._tls, additional_headers=headers, open_timeout=10, proxy=None
            )
        except InvalidStatus as error:
            if error.response.status_code == 401:
                raise
            self._retry_later()
        except (OSError, TimeoutError, WebSocketException):
            self._retry_later()
        else:
            self._backoff = _FIRST_BACKOFF
        return self._socket is not None

    def receive(self, timeout: float) -> list[dict[str, Any]]:
        """The frames that arrive within `timeout` seconds (at least one wait, then what is queued)."""
        if self._socket is None:
            time.sleep(timeout)
            return []
        frames: list[dict[str, Any]] = []
        wait: float = timeout
        try:
            while True:
                text = self._socket.recv(timeout=wait)
                frame = json.loads(text)
                if isinstance(frame, dict):
                    frames.extend(single_frames(frame))
                wait = 0
        except TimeoutError:
            return frames
        except ConnectionClosed as closed:
            self._lost(closed)
            return frames

    def ack(self, conversation_id: str, seq: int) -> None:
        """Move this device's replay cursor: the server will not send these messages again."""
        if self._socket is None:
            return
        frame = {"type": "ack", "conversation_id": conversation_id, "seq": seq}
        try:
            self._socket.send(json.dumps(frame))
        except ConnectionClosed as closed:
            self._lost(closed)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _lost(self, closed: ConnectionClosed) -> None:
        self._socket = None
        code = closed.rcvd.code if closed.rcvd is not None else None
        if code == CLOSE_REPLACED:
            raise UserError(
                "Another veil-client opened this device's live connection (a second `chat`?); this one stops."
            )
        if code == CLOSE_SESSION_ENDED:
            self._next_attempt = 0.0  # the token expired: reconnect at once with a fresh one
        else:
            self._retry_later()

    def _retry_later(self) -> None:
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _MAX_BACKOFF)

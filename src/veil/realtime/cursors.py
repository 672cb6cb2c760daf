"""Replay cursors of every socket in the process, written together.

Each delivered message is acknowledged, so at a thousand deliveries a second one write per ack
(or per socket) is a thousand commits a second, most of the database's work in the fan-out
benchmark (issue 19). Acks are cumulative and have no reply, so they can wait a few tens of
milliseconds: they gather here (per device and conversation the highest seq wins) and go to the
database in one statement per round. A socket that ends writes what is pending at once, so a
client that acknowledges and reconnects is not sent those messages again. An ack that is never
written (the process dies, the database is down) costs a redelivery, never a loss: replay starts
from the last written cursor, and clients drop a message id they already have.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from veil.core.db import Database
from veil.core.logging import get_logger
from veil.core.problems import BackendUnavailable
from veil.messaging.store import Ack, advance_cursors

log = get_logger(__name__)

# How long acks gather before they are written, and the pause after a failed write.
GATHER_SECONDS = 0.025
_RETRY_SECONDS = 1.0


class CursorWriter:
    def __init__(self, db: Database, gather_seconds: float = GATHER_SECONDS) -> None:
        self._db = db
        self._gather_seconds = gather_seconds
        # (device, conversation) -> (user, highest acknowledged seq)
        self._pending: dict[tuple[uuid.UUID, uuid.UUID], tuple[uuid.UUID, int]] = {}
        self._due = asyncio.Event()
        self._writing = asyncio.Lock()

    def record(self, user_id: uuid.UUID, device_id: uuid.UUID, conversation_id: uuid.UUID, seq: int) -> None:
        key = (device_id, conversation_id)
        held = self._pending.get(key)
        if held is None or seq > held[1]:
            self._pending[key] = (user_id, seq)
        self._due.set()

    async def run_forever(self) -> None:
        while True:
            await self._due.wait()
            await asyncio.sleep(self._gather_seconds)
            self._due.clear()
            try:
                await self.flush()
            except BackendUnavailable as exc:
                log.warning(
                    "acks_not_saved_yet", error=type(exc.__cause__).__name__, pending=len(self._pending)
                )
                await asyncio.sleep(_RETRY_SECONDS)
                self._due.set()
            except Exception:  # never let one bad round stop every later cursor write
                log.exception("acks_not_saved")

    async def flush(self) -> None:
        """Write everything pending now (one write at a time). While the database is unavailable it
        stays pending (BackendUnavailable); a batch the database refuses is dropped."""
        async with self._writing:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            acks = [
                Ack(device, conversation, user, seq) for (device, conversation), (user, seq) in batch.items()
            ]
            try:
                async with self._db.connection() as conn:
                    await advance_cursors(conn, acks)
            except BackendUnavailable:
                for (device, conversation), (user, seq) in batch.items():
                    self.record(user, device, conversation, seq)
                raise
            except asyncpg.PostgresError as exc:
                # Not retried: a batch the database refuses would be refused for ever and hold back
                # every later ack. Its messages are delivered again (at least once, never lost).
                log.warning("acks_dropped", error=type(exc).__name__, acks=len(acks))

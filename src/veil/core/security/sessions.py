"""Is a session still active? Asked on every authenticated request.

Answers come from a small per-process cache of sessions recently seen active, so most requests
cost no query. Revocation (logout, revoke, refresh reuse, account disable) sends a PostgreSQL
NOTIFY in the revoking transaction; every process LISTENs and drops the session from its cache,
so the very next request anywhere is refused. While the listening connection is down, the cache
is not trusted at all and every check goes to the database: stale "active" answers are never
given. If the database cannot answer, the check raises BackendUnavailable (fail closed: 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import datetime

import asyncpg

from veil.core.db import Connection, Database
from veil.core.logging import get_logger

log = get_logger(__name__)

REVOCATION_CHANNEL = "veil_session_revoked"

_ACTIVE = """
    SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.status = 'active'
"""


class SessionGuard:
    def __init__(self, db: Database, dsn: str, *, cache_seconds: float = 30.0, max_entries: int = 100_000):
        self._db = db
        self._dsn = dsn
        self._cache_seconds = cache_seconds
        self._max_entries = max_entries
        self._active_until: dict[uuid.UUID, float] = {}
        self._listening = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="session-revocation-listener")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def is_active(self, session_id: uuid.UUID, now: datetime) -> bool:
        if self._listening and self._active_until.get(session_id, 0.0) > time.monotonic():
            return True
        async with self._db.connection() as conn:
            active = await conn.fetchval(_ACTIVE, session_id, now) is not None
        if active and self._listening:
            if len(self._active_until) >= self._max_entries:
                self._active_until.clear()
            self._active_until[session_id] = time.monotonic() + self._cache_seconds
        return active

    def forget(self, session_id: uuid.UUID) -> None:
        self._active_until.pop(session_id, None)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        for part in str(payload).split(","):
            with contextlib.suppress(ValueError):
                self.forget(uuid.UUID(part))

    async def _listen_forever(self) -> None:
        while True:
            conn: asyncpg.Connection[asyncpg.Record] | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(REVOCATION_CHANNEL, self._on_notify)
                # Anything cached before we were listening may have been revoked meanwhile.
                self._active_until.clear()
                self._listening = True
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=5)  # detects a silent network loss
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: stop trusting the cache, then reconnect
                log.warning("session_listener_lost", error=type(exc).__name__)
            finally:
                self._listening = False
                self._active_until.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(1)


async def notify_revoked(conn: Connection, session_ids: list[uuid.UUID]) -> None:
    """Tell every process to forget these sessions; delivered when the transaction commits."""
    for start in range(0, len(session_ids), 100):  # a NOTIFY payload holds < 8000 bytes
        payload = ",".join(str(s) for s in session_ids[start : start + 100])
        await conn.execute("SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, payload)

"""Is a session still active? Asked on every authenticated request.

Answers come from a small per-process cache of sessions recently seen active, so most requests
cost no query. Revocation (logout, revoke, refresh reuse, account disable) sends a PostgreSQL
NOTIFY in the revoking transaction; every process LISTENs and drops the session from its cache.
The revoking process does not wait for its own notification (PostgreSQL may deliver it after the
client's next request arrives): the service calls `revoked()` once its transaction has committed,
so the very next request to that process is refused, and every other process refuses it as soon
as the notification arrives (milliseconds). A check whose query was already running when a
revocation arrived does not cache its (possibly stale) answer. While the listening connection is
down, the cache is not trusted at all and every check goes to the database: stale "active"
answers are never given. If the database cannot answer, the check raises BackendUnavailable
(fail closed: 503).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import datetime

from veil.core.db import Connection, Database
from veil.core.listener import Notifications

REVOCATION_CHANNEL = "veil_session_revoked"

_ACTIVE = """
    SELECT s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id
    WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.status = 'active'
"""


class SessionGuard:
    def __init__(
        self,
        db: Database,
        notifications: Notifications,
        *,
        cache_seconds: float = 30.0,
        max_entries: int = 100_000,
    ):
        self._db = db
        self._notifications = notifications
        self._cache_seconds = cache_seconds
        self._max_entries = max_entries
        self._active_until: dict[uuid.UUID, float] = {}
        self._revocations_seen = 0  # grows with every revocation this process learns of
        self._listening = False

    async def start(self) -> None:
        await self._notifications.subscribe(
            [REVOCATION_CHANNEL], self._on_notify, on_up=self._listening_again, on_down=self._deaf
        )

    @property
    def listening(self) -> bool:
        """Whether revocation notices are arriving (and so whether answers are cached)."""
        return self._listening

    def _listening_again(self) -> None:
        # Anything cached, or read by a check still running, may have been revoked meanwhile.
        self._forget_all()
        self._listening = True

    def _deaf(self) -> None:
        self._listening = False
        self._forget_all()

    def _forget_all(self) -> None:
        self._revocations_seen += 1
        self._active_until.clear()

    async def is_active(self, session_id: uuid.UUID, now: datetime) -> bool:
        if self._listening and self._active_until.get(session_id, 0.0) > time.monotonic():
            return True
        revocations_before = self._revocations_seen
        async with self._db.connection() as conn:
            expires_at: datetime | None = await conn.fetchval(_ACTIVE, session_id, now)
        if expires_at is None:
            return False
        if self._listening and self._revocations_seen == revocations_before:
            if len(self._active_until) >= self._max_entries:
                self._active_until.clear()
            # Never vouch for a session past its own end, even within the cache's lifetime.
            cache_for = min(self._cache_seconds, (expires_at - now).total_seconds())
            self._active_until[session_id] = time.monotonic() + cache_for
        return True

    def revoked(self, session_ids: list[uuid.UUID]) -> None:
        """Drop sessions this process just revoked: call after the revoking transaction commits
        (before it, a concurrent check could cache the still-active row again)."""
        self._revocations_seen += 1
        for session_id in session_ids:
            self._active_until.pop(session_id, None)

    def _on_notify(self, _channel: str, payload: str) -> None:
        ids = []
        for part in payload.split(","):
            with contextlib.suppress(ValueError):
                ids.append(uuid.UUID(part))
        self.revoked(ids)


async def notify_revoked(conn: Connection, session_ids: list[uuid.UUID]) -> None:
    """Tell every process to forget these sessions; delivered when the transaction commits."""
    for start in range(0, len(session_ids), 100):  # a NOTIFY payload holds < 8000 bytes
        payload = ",".join(str(s) for s in session_ids[start : start + 100])
        await conn.execute("SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, payload)

"""Retention: how long each kind of data is kept, enforced by the maintenance round.

The periods come from the configuration (`Settings.retention_days`, at most 30 days in development
and 90 in production). Messages and ended sessions are deleted here; queued device messages expire
in the keys store (VEIL_DEVICE_MESSAGE_TTL_DAYS); attachments past their period are removed by the
attachment sweep (objects first); logs are written to standard error and kept by the deployment's
log pipeline for VEIL_RETENTION_LOGS_DAYS (docs/privacy.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from veil.core.config import Settings
from veil.core.db import Connection

# Data-subject requests are kept this long after they were made (they hold a new email address).
_REQUESTS = timedelta(days=30)


@dataclass(frozen=True)
class RetentionPolicy:
    messages: timedelta
    attachments: timedelta
    sessions: timedelta

    DEFAULT: ClassVar[RetentionPolicy]

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            messages=timedelta(days=settings.retention_messages_days),
            attachments=timedelta(days=settings.retention_attachments_days),
            sessions=timedelta(days=settings.retention_sessions_days),
        )


RetentionPolicy.DEFAULT = RetentionPolicy(timedelta(days=30), timedelta(days=30), timedelta(days=30))


def _count(status: str) -> int:
    return int(status.split()[-1])


async def apply_retention(conn: Connection, policy: RetentionPolicy, now: datetime) -> dict[str, int]:
    """Delete what has outlived its period; counts of what went, for the log."""
    messages = await conn.execute("DELETE FROM messages WHERE created_at < $1", now - policy.messages)
    sessions = await conn.execute(
        "DELETE FROM sessions WHERE coalesce(revoked_at, expires_at) < $1", now - policy.sessions
    )
    requests = await conn.execute("DELETE FROM account_requests WHERE created_at < $1", now - _REQUESTS)
    return {
        "messages_deleted": _count(messages),
        "sessions_deleted": _count(sessions),
        "account_requests_deleted": _count(requests),
    }

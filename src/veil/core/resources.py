"""The process-wide resources every service shares, opened in the app's lifespan and closed with it.

This is the composition root for adapters: services receive a `Resources` and never build their own
pools or clients, and nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from veil.core.blobstore import BlobStore
from veil.core.clock import Clock, SystemClock
from veil.core.config import Settings
from veil.core.db import Database
from veil.core.listener import Notifications
from veil.core.mailer import Mailer
from veil.core.metrics import Metrics
from veil.core.problems import BackendUnavailable
from veil.core.security.authn import Authenticator
from veil.core.security.passwords import Argon2Parameters, Passwords
from veil.core.security.ratelimit import (
    CountedRateLimiter,
    MemoryRateLimiter,
    PostgresRateLimiter,
    RateLimiter,
    Unlimited,
)
from veil.core.security.sessions import SessionGuard
from veil.core.security.tokens import AccessTokens, SigningKeys


@dataclass
class Resources:
    settings: Settings
    db: Database
    # The process's one LISTEN connection (core/listener.py).
    notifications: Notifications
    blobs: BlobStore
    metrics: Metrics
    clock: Clock
    signing_keys: SigningKeys
    tokens: AccessTokens
    sessions: SessionGuard
    authenticator: Authenticator
    limiter: RateLimiter
    mailer: Mailer
    # One Argon2 queue per process, shared by every service that checks a password.
    passwords: Passwords

    async def readiness(self) -> dict[str, str]:
        """Check every backing service at once; map each to "ok" or "unavailable"."""
        names = ("database", "object_store")
        results = await asyncio.gather(self.db.ping(), self.blobs.ping(), return_exceptions=True)
        checks = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, BackendUnavailable):
                raise result
            checks[name] = "unavailable" if isinstance(result, BackendUnavailable) else "ok"
        return checks


def _secret(value: object, name: str) -> str:
    if value is None:
        raise RuntimeError(f"{name} is not configured")
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def _hash_slots() -> int:
    """Hashes that run at once: each already keeps `parallelism` cores busy, so more would only
    make every one of them slower (on 2 cores with p=2: one at a time, ~58 ms each)."""
    return max(1, (os.cpu_count() or 1) // Argon2Parameters.parallelism)


def _limiter(settings: Settings, db: Database) -> RateLimiter:
    if not settings.rate_limits_enabled:
        return Unlimited()
    if settings.rate_limit_store == "memory":
        return MemoryRateLimiter()
    return PostgresRateLimiter(db)


@asynccontextmanager
async def open_resources(
    settings: Settings, metrics: Metrics, clock: Clock | None = None
) -> AsyncIterator[Resources]:
    if settings.s3_endpoint is None or settings.jwt_keys_file is None or not settings.smtp_host:
        raise RuntimeError(
            "S3_ENDPOINT, SMTP_HOST and VEIL_JWT_KEYS_FILE must be resolved before the app starts"
        )
    dsn = _secret(settings.database_url, "DATABASE_URL")
    clock = clock or SystemClock()
    db = Database(
        dsn,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_timeout_seconds,
        metrics=metrics,
    )
    blobs = BlobStore(
        settings.s3_endpoint,
        _secret(settings.s3_access_key, "S3_ACCESS_KEY"),
        _secret(settings.s3_secret_key, "S3_SECRET_KEY"),
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        timeout=settings.s3_timeout_seconds,
        public_endpoint=settings.s3_public_endpoint,
    )
    signing_keys = SigningKeys.load(settings.jwt_keys_file)
    tokens = AccessTokens(
        signing_keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.access_token_ttl_seconds,
    )
    notifications = Notifications(dsn)
    sessions = SessionGuard(db, notifications)
    passwords = Passwords(Argon2Parameters(time_cost=settings.argon2_time_cost), max_concurrent=_hash_slots())
    await db.open()
    notifications.start()
    await sessions.start()
    try:
        yield Resources(
            settings=settings,
            db=db,
            notifications=notifications,
            blobs=blobs,
            metrics=metrics,
            clock=clock,
            signing_keys=signing_keys,
            tokens=tokens,
            sessions=sessions,
            authenticator=Authenticator(tokens, sessions, clock),
            limiter=CountedRateLimiter(_limiter(settings, db), metrics.rate_limited),
            mailer=Mailer(
                settings.smtp_host,
                settings.smtp_port,
                sender=settings.mail_from,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                starttls=settings.smtp_starttls,
            ),
            passwords=passwords,
        )
    finally:
        await notifications.close()
        await db.close()
        blobs.close()
        passwords.close()

"""The process-wide resources every service shares, opened in the app's lifespan and closed with it.

This is the composition root for adapters: services receive a `Resources` and never build their own
pools or clients, and nothing is created at import time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from veil.core.blobstore import BlobStore
from veil.core.clock import Clock, SystemClock
from veil.core.config import Settings
from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.core.problems import BackendUnavailable


@dataclass
class Resources:
    settings: Settings
    db: Database
    blobs: BlobStore
    metrics: Metrics
    clock: Clock

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


def _required(value: object, name: str) -> str:
    if value is None:
        raise RuntimeError(f"{name} is not configured")
    return str(value)


@asynccontextmanager
async def open_resources(
    settings: Settings, metrics: Metrics, clock: Clock | None = None
) -> AsyncIterator[Resources]:
    if settings.database_url is None or settings.s3_endpoint is None:
        raise RuntimeError("DATABASE_URL and S3_ENDPOINT must be resolved before the app starts")
    db = Database(
        settings.database_url.get_secret_value(),
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        timeout=settings.db_timeout_seconds,
        metrics=metrics,
    )
    blobs = BlobStore(
        settings.s3_endpoint,
        _required(settings.s3_access_key and settings.s3_access_key.get_secret_value(), "S3_ACCESS_KEY"),
        _required(settings.s3_secret_key and settings.s3_secret_key.get_secret_value(), "S3_SECRET_KEY"),
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        timeout=settings.s3_timeout_seconds,
    )
    await db.open()
    try:
        yield Resources(settings, db, blobs, metrics, clock or SystemClock())
    finally:
        await db.close()
        blobs.close()

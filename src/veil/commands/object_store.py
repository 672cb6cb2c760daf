"""How a subcommand reaches the configured object store (`S3_*`), and lists its bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from veil.commands.output import fail
from veil.core.blobstore import BlobStore, ListedObject
from veil.core.config import Settings
from veil.core.problems import BackendUnavailable


@contextmanager
def object_store(settings: Settings) -> Iterator[BlobStore]:
    """The bucket the services use; one line and exit status 1 if it is not configured."""
    if settings.s3_endpoint is None or settings.s3_access_key is None or settings.s3_secret_key is None:
        fail("the object store is not configured: set S3_ENDPOINT, S3_ACCESS_KEY and S3_SECRET_KEY")
    store = BlobStore(
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        timeout=settings.s3_timeout_seconds,
    )
    try:
        yield store
    finally:
        store.close()


def bucket_listing(store: BlobStore) -> list[ListedObject]:
    try:
        return asyncio.run(store.list_objects())
    except BackendUnavailable:
        fail(f"the object store is unavailable (bucket {store.bucket})")

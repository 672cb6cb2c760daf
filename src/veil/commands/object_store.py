"""How a subcommand reaches the configured object store (`S3_*`), and lists its bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from veil.commands.output import fail
from veil.core.blobstore import BlobStore, ListedObject
from veil.core.config import Settings
from veil.core.problems import BackendUnavailable


def _development_store(settings: Settings) -> tuple[str, str, str]:
    """Endpoint and credentials of the running `make run` system's private S3 server."""
    from veil.devstack.s3 import EmbeddedS3
    from veil.devstack.stack import dev_secrets

    data_dir = settings.data_dir.resolve()
    credentials = dev_secrets(data_dir)
    access_key, secret_key = credentials["S3_ACCESS_KEY"], credentials["S3_SECRET_KEY"]
    s3 = EmbeddedS3(data_dir / "s3", access_key, secret_key, settings.s3_bucket)
    if s3.pid is None:
        fail("no object store: start the system with `make run`, or set S3_ENDPOINT")
    return s3.endpoint, access_key, secret_key


def _configured_store(settings: Settings) -> tuple[str, str, str]:
    """Endpoint and credentials from S3_*, or in development those of the running `make run`."""
    if settings.s3_endpoint is None and not settings.is_production:
        return _development_store(settings)
    if settings.s3_endpoint is None or settings.s3_access_key is None or settings.s3_secret_key is None:
        fail("the object store is not configured: set S3_ENDPOINT, S3_ACCESS_KEY and S3_SECRET_KEY")
    return (
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
    )


@contextmanager
def object_store(settings: Settings) -> Iterator[BlobStore]:
    """The bucket the services use; one line and exit status 1 if there is none."""
    endpoint, access_key, secret_key = _configured_store(settings)
    store = BlobStore(
        endpoint,
        access_key,
        secret_key,
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

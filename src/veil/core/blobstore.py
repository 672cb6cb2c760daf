"""The S3-compatible object store that holds encrypted blobs (SeaweedFS here, MinIO or AWS S3 in
production). The server only ever stores and signs for ciphertext; it never reads blob contents.

minio-py is synchronous; every call runs in a worker thread so the event loop never blocks, and
every call is bounded by `timeout` so an unreachable store becomes `BackendUnavailable` quickly.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import S3Error

from veil.core.problems import BackendUnavailable


class BlobStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        bucket: str,
        region: str,
        timeout: float,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("S3_ENDPOINT must be an http(s) URL")
        self.bucket = bucket
        self._timeout = timeout
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=urllib3.Retry(total=1, backoff_factor=0.1),
            maxsize=16,
        )
        # Passing the region stops minio-py from making a blocking lookup on first use.
        self._client = Minio(
            parts.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=parts.scheme == "https",
            region=region,
            http_client=self._http,
        )

    async def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers and the bucket exists."""
        try:
            exists = await asyncio.wait_for(
                asyncio.to_thread(self._client.bucket_exists, self.bucket), self._timeout * 2
            )
        except (S3Error, urllib3.exceptions.HTTPError, OSError, TimeoutError) as exc:
            raise BackendUnavailable("object store unavailable") from exc
        if not exists:
            raise BackendUnavailable(f"bucket {self.bucket!r} does not exist")

    def close(self) -> None:
        self._http.clear()

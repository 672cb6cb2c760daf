"""The S3-compatible object store that holds encrypted blobs (SeaweedFS here, MinIO or AWS S3 in
production, through the same code). The server stores and signs for ciphertext only; file bytes go
between clients and the store directly, through presigned requests, never through Veil.

boto3 is synchronous: every network call runs in a worker thread so the event loop never blocks,
and is bounded by `timeout` so an unreachable store becomes `BackendUnavailable` quickly. Presigning
is a local computation and makes no network call.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from veil.core.problems import BackendUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

T = TypeVar("T")

# S3 answers a missing key with one of these codes depending on the call.
_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class PresignedUpload:
    """A PUT the store itself checks: `headers` are signed, so a body of another length or digest
    is refused by the store, not by us."""

    url: str
    headers: dict[str, str]


@dataclass(frozen=True)
class ListedObject:
    """One entry of the bucket's listing."""

    key: str
    size: int
    # As the store reports it, without quotes: an MD5 for a single-part upload, opaque otherwise.
    etag: str


@dataclass(frozen=True)
class StoredObject:
    size: int
    # The SHA-256 the store verified on upload, or None if the store did not keep one.
    sha256: bytes | None


def _validated(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {endpoint!r}")
    return endpoint


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
        public_endpoint: str | None = None,
    ) -> None:
        self.bucket = bucket
        self._timeout = timeout
        self._answered_at = -float("inf")
        config = Config(
            signature_version="s3v4",
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=16,
            # Path-style URLs work on AWS S3, MinIO and SeaweedFS alike.
            s3={"addressing_style": "path"},
            # Checksums only where we ask for them (the presigned PUT), not on every call.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

        def client(url: str) -> S3Client:
            return boto3.client(
                "s3",
                endpoint_url=_validated(url),
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name=region,
                config=config,
            )

        self._client = client(endpoint)
        # Clients may reach the store under another name than the servers do (a public hostname
        # versus an internal one); SigV4 signs the host, so presign with the one clients use.
        self._signer = self._client if public_endpoint is None else client(public_endpoint)

    async def _call(self, action: Callable[[], T]) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(action), self._timeout * 2)
        except (BotoCoreError, TimeoutError, OSError) as exc:
            raise BackendUnavailable("object store unavailable") from exc
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise
            raise BackendUnavailable("object store refused the request") from exc

    async def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers and the bucket exists."""
        try:
            await self._call(partial(self._client.head_bucket, Bucket=self.bucket))
        except ClientError as exc:
            raise BackendUnavailable(f"bucket {self.bucket!r} does not exist") from exc
        self._answered_at = time.monotonic()

    async def ensure_reachable(self, max_age: float = 2.0) -> None:
        """Like `ping`, but trusts an answer from the last `max_age` seconds: a round trip per
        request would cost more than half of a reservation's time (docs/benchmarks.md)."""
        if time.monotonic() - self._answered_at > max_age:
            await self.ping()

    def presign_put(self, key: str, size: int, sha256: bytes, expires_in: int) -> PresignedUpload:
        checksum = base64.b64encode(sha256).decode()
        url = self._signer.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentLength": size, "ChecksumSHA256": checksum},
            ExpiresIn=expires_in,
        )
        return PresignedUpload(url, {"Content-Length": str(size), "x-amz-checksum-sha256": checksum})

    def presign_get(self, key: str, expires_in: int) -> str:
        """A GET whose response is forced to an opaque download, whatever the bytes look like."""
        return self._signer.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentType": "application/octet-stream",
                "ResponseContentDisposition": "attachment",
            },
            ExpiresIn=expires_in,
        )

    async def stat(self, key: str) -> StoredObject | None:
        """Size and verified checksum of an object, or None if there is none under `key`."""
        try:
            head = await self._call(
                partial(self._client.head_object, Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
            )
        except ClientError:
            return None
        checksum = head.get("ChecksumSHA256")
        return StoredObject(
            size=head["ContentLength"],
            sha256=base64.b64decode(checksum) if checksum else None,
        )

    async def list_objects(self) -> list[ListedObject]:
        """Every object in the bucket, in key order (one request per 1,000 keys)."""

        def listing() -> list[ListedObject]:
            found: list[ListedObject] = []
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            for page in pages:
                found.extend(
                    ListedObject(item["Key"], item["Size"], item.get("ETag", "").strip('"'))
                    for item in page.get("Contents", [])
                )
            return found

        return await self._call(listing)

    async def put(self, key: str, data: bytes) -> None:
        """Store a small object the server itself produced (an export archive)."""
        await self._call(partial(self._client.put_object, Bucket=self.bucket, Key=key, Body=data))

    async def delete(self, keys: Sequence[str]) -> None:
        """Remove objects (a missing one is not an error). Raises BackendUnavailable unless every
        key is gone, so callers delete their rows only after the objects."""
        for start in range(0, len(keys), 1000):  # the S3 limit per DeleteObjects call
            batch: list[ObjectIdentifierTypeDef] = [{"Key": key} for key in keys[start : start + 1000]]
            result = await self._call(
                partial(
                    self._client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            )
            if result.get("Errors"):
                raise BackendUnavailable(f"object store kept {len(result['Errors'])} objects")

    def close(self) -> None:
        for client in {id(self._client): self._client, id(self._signer): self._signer}.values():
            client.close()

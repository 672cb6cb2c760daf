"""Moving ciphertext to and from the object store with the presigned requests the server hands out.

These requests go to the store directly, never to the Veil server, and carry no Veil credentials:
the signature in the URL is the whole authorisation. Bodies stream in chunks, so a 50 MiB file is
never held in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import httpx

_CHUNK = 256 * 1024


class TransferError(Exception):
    """The object store refused or broke off a transfer, or sent more than was expected."""


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(_CHUNK):
        yield chunk


def put_presigned(http: httpx.Client, upload: Mapping[str, Any], source: BinaryIO) -> None:
    """Send `source` with exactly the method, URL and headers of the server's upload request.

    The headers include the signed `Content-Length` and `x-amz-checksum-sha256`: the store refuses
    the body unless it matches both.
    """
    headers = {str(k): str(v) for k, v in upload["headers"].items()}
    method, url = str(upload["method"]), str(upload["url"])
    response = http.request(method, url, content=_chunks(source), headers=headers)
    if response.status_code != 200:
        raise TransferError(f"the object store refused the upload (HTTP {response.status_code})")


def get_presigned(http: httpx.Client, url: str, sink: BinaryIO, *, max_bytes: int) -> bytes:
    """Stream a download into `sink`; the SHA-256 of what arrived. Stops past `max_bytes`."""
    digest = hashlib.sha256()
    received = 0
    with http.stream("GET", url) as response:
        if response.status_code != 200:
            raise TransferError(f"the object store refused the download (HTTP {response.status_code})")
        for chunk in response.iter_bytes(_CHUNK):
            received += len(chunk)
            if received > max_bytes:
                raise TransferError("the object store sent more bytes than the file has")
            digest.update(chunk)
            sink.write(chunk)
    return digest.digest()

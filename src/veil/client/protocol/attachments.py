"""Encrypting files for attachments, and the reference that lets a recipient open one.

A file is encrypted on the client under a fresh random 256-bit key with AES-256-GCM, in chunks, so
that neither side ever holds more than one chunk of plaintext or ciphertext in memory:

    header = b"VEILF" || version (1 byte) || chunk size (4 bytes, big-endian)
    body   = AES-GCM(key, nonce_i, chunk_i, aad=header || associated data) for i = 0 .. n-1
             (attachments have no associated data; backups bind their own header, protocol/backup.py)
    nonce_i = i (11 bytes, big-endian) || 0x01 if chunk i is the last else 0x00

Each chunk is authenticated, the counter in the nonce fixes the order, and the last-chunk flag
makes a truncated file (cut at a chunk boundary) fail instead of looking complete. Because the key
is new for every file, counter nonces never repeat under one key. An empty file is one empty last
chunk (just its tag).

What the server stores is that ciphertext and its SHA-256. The key, the digest, the sizes and the
file name travel only inside the end-to-end-encrypted `file` message (`FileReference`), so the
recipient checks that the bytes it downloaded are the ones the sender meant before decrypting.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from veil.client.protocol.codec import b64encode, canonical_uuid, read_bytes, read_int, read_str
from veil.client.protocol.errors import DecryptionError, MalformedMessageError

KEY_SIZE = 32
DEFAULT_CHUNK_SIZE = 64 * 1024
_MAGIC = b"VEILF"
_VERSION = 1
_HEADER_SIZE = len(_MAGIC) + 1 + 4
_TAG_SIZE = 16
_MAX_CHUNK_SIZE = 16 * 1024 * 1024
_MAX_NAME_BYTES = 1024


@dataclass(frozen=True)
class EncryptedFile:
    """The outcome of encrypting one file: its key, and the size and SHA-256 of the ciphertext."""

    key: bytes
    size: int
    sha256: bytes
    plaintext_size: int


def _header(chunk_size: int) -> bytes:
    return _MAGIC + bytes([_VERSION]) + chunk_size.to_bytes(4, "big")


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _read_full(source: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end of the stream (short reads are retried)."""
    parts: list[bytes] = []
    remaining = size
    while remaining:
        part = source.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def encrypt_file(
    source: BinaryIO,
    sink: BinaryIO,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    key: bytes | None = None,
    associated_data: bytes = b"",
) -> EncryptedFile:
    """Encrypt everything `source` yields into `sink` under a fresh key, or under `key` (tests, and
    backups, whose key is derived with a fresh salt each time: a key must never encrypt twice).

    `associated_data` is authenticated with every chunk after the header (attachments pass none;
    a backup binds its own header, which names the user)."""
    if not 1 <= chunk_size <= _MAX_CHUNK_SIZE:
        raise ValueError("chunk_size out of range")
    key = key if key is not None else os.urandom(KEY_SIZE)
    aead = AESGCM(key)
    header = _header(chunk_size)
    aad = header + associated_data
    digest = hashlib.sha256(header)
    sink.write(header)
    size, plaintext_size, index = len(header), 0, 0
    chunk = _read_full(source, chunk_size)
    while True:
        following = _read_full(source, chunk_size) if len(chunk) == chunk_size else b""
        last = not following
        sealed = aead.encrypt(_nonce(index, last), chunk, aad)
        sink.write(sealed)
        digest.update(sealed)
        size += len(sealed)
        plaintext_size += len(chunk)
        if last:
            return EncryptedFile(key=key, size=size, sha256=digest.digest(), plaintext_size=plaintext_size)
        chunk, index = following, index + 1


def decrypt_file(source: BinaryIO, sink: BinaryIO, key: bytes, *, associated_data: bytes = b"") -> int:
    """Decrypt a file written by `encrypt_file` (with the same `associated_data`) into `sink`; the
    number of plaintext bytes.

    Raises `DecryptionError` if any chunk was altered, reordered, dropped or appended, or if the
    file was cut short; `sink` may then hold a prefix of the plaintext, which the caller discards.
    """
    header = _read_full(source, _HEADER_SIZE)
    if len(header) != _HEADER_SIZE or header[: len(_MAGIC)] != _MAGIC or header[len(_MAGIC)] != _VERSION:
        raise MalformedMessageError("not a Veil encrypted file")
    chunk_size = int.from_bytes(header[-4:], "big")
    if not 1 <= chunk_size <= _MAX_CHUNK_SIZE:
        raise MalformedMessageError("unsupported chunk size")
    aead = AESGCM(key)
    block_size = chunk_size + _TAG_SIZE
    written, index = 0, 0
    block = _read_full(source, block_size)
    while True:
        following = _read_full(source, block_size) if len(block) == block_size else b""
        last = not following
        try:
            plaintext = aead.decrypt(_nonce(index, last), block, header + associated_data)
        except InvalidTag:
            raise DecryptionError("the file was altered, truncated or encrypted under another key") from None
        sink.write(plaintext)
        written += len(plaintext)
        if last:
            return written
        block, index = following, index + 1


@dataclass(frozen=True)
class FileReference:
    """The plaintext of a `file` message: everything a recipient needs to fetch and open the file.
    It never leaves the client unencrypted."""

    attachment_id: str
    key: bytes
    sha256: bytes
    size: int
    name: str
    plaintext_size: int

    def encode(self) -> bytes:
        return json.dumps(
            {
                "attachment_id": self.attachment_id,
                "key": b64encode(self.key),
                "sha256": b64encode(self.sha256),
                "size": self.size,
                "name": self.name,
                "plaintext_size": self.plaintext_size,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> FileReference:
        try:
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise ValueError("a file message must be a JSON object")
            name = read_str(data, "name")
            if len(name.encode()) > _MAX_NAME_BYTES or "/" in name or "\0" in name:
                raise ValueError("a file name must be a plain name of at most 1024 bytes")
            return cls(
                attachment_id=canonical_uuid(read_str(data, "attachment_id"), field="attachment_id"),
                key=read_bytes(data, "key", size=KEY_SIZE),
                sha256=read_bytes(data, "sha256", size=32),
                size=read_int(data, "size"),
                name=name,
                plaintext_size=read_int(data, "plaintext_size"),
            )
        except ValueError as error:  # json.JSONDecodeError is a ValueError too
            raise MalformedMessageError(f"not a valid file message: {error}") from None
        except RecursionError:  # json.loads gives up on deeply nested arrays that way
            raise MalformedMessageError("not a valid file message: nested too deeply") from None

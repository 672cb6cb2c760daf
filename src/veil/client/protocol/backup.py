"""The encrypted backup object: what `veil-client backup create` uploads to the user's backup slot.

    object = header || body
    header = b"VEILB" || version 0x01 || user_id[16] || salt[32]                          (54 bytes)
    key    = HKDF-SHA256(ikm = recovery key[32], salt = salt, info = "veil/backup/v1", length 32)
    body   = the chunked AES-256-GCM file format of protocol/attachments.py under `key`, with
             `header` as associated data of every chunk

The salt is new for every backup, so a key never encrypts twice even when a person reuses a recovery
key (the file format's counter nonces rely on that). The header names the user in clear so that a
restore can say "this backup belongs to another account" before decrypting, and it is bound into
every chunk, so a server that rewrites it to hand one user's backup to another makes decryption
fail. A wrong recovery key, a damaged object and a swapped one are indistinguishable by design (as a
wrong keystore passphrase and an altered keystore are): all three are `BackupDecryptionError`.

The plaintext is the JSON document of protocol/backup_contents.py.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.client.protocol.attachments import DEFAULT_CHUNK_SIZE, decrypt_file, encrypt_file
from veil.client.protocol.codec import uuid_bytes, uuid_str
from veil.client.protocol.errors import DecryptionError
from veil.client.protocol.recovery_key import RECOVERY_KEY_SIZE

MAGIC = b"VEILB"
VERSION = 1
SALT_SIZE = 32
HEADER_SIZE = len(MAGIC) + 1 + 16 + SALT_SIZE
KEY_INFO = b"veil/backup/v1"


class BackupError(Exception):
    """Base class of the refusals of a backup (not a `CryptoError`: no message is involved)."""


class BackupDecryptionError(BackupError):
    """The recovery key does not open the backup, or the object was altered, cut or replaced."""


class BackupOwnerError(BackupError):
    """The backup names another account than the one restoring it."""


@dataclass(frozen=True)
class EncryptedBackup:
    """Size and SHA-256 of the object written, as the backup slot's upload is reserved with."""

    size: int
    sha256: bytes


def backup_key(recovery_key: bytes, salt: bytes) -> bytes:
    """The AES-256-GCM key of one backup."""
    if len(recovery_key) != RECOVERY_KEY_SIZE or len(salt) != SALT_SIZE:
        raise ValueError("a recovery key and a backup salt are 32 bytes each")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=KEY_INFO).derive(recovery_key)


def backup_header(user_id: str, salt: bytes) -> bytes:
    if len(salt) != SALT_SIZE:
        raise ValueError("a backup salt is 32 bytes")
    return MAGIC + bytes([VERSION]) + uuid_bytes(user_id, field="user_id") + salt


class _CountingSink:
    """Passes writes on to a stream while hashing and counting them: the slot is reserved with the
    size and SHA-256 of the whole object, header included."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._sink.write(data)


def encrypt_backup(
    source: BinaryIO,
    sink: BinaryIO,
    recovery_key: bytes,
    user_id: str,
    *,
    salt: bytes | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EncryptedBackup:
    """Encrypt the backup document `source` yields into `sink` (`salt` fixed only for vectors)."""
    header = backup_header(user_id, salt if salt is not None else os.urandom(SALT_SIZE))
    counted = _CountingSink(sink)
    counted.write(header)
    encrypt_file(
        source,
        counted,  # type: ignore[arg-type]  # only write() is used
        chunk_size=chunk_size,
        key=backup_key(recovery_key, header[-SALT_SIZE:]),
        associated_data=header,
    )
    return EncryptedBackup(size=counted.size, sha256=counted.digest.digest())


def read_backup_owner(header: bytes) -> str:
    """The user id a backup header names (unauthenticated until the body decrypts)."""
    if len(header) != HEADER_SIZE or header[: len(MAGIC)] != MAGIC:
        raise BackupDecryptionError("this is not a Veil backup")
    if header[len(MAGIC)] != VERSION:
        raise BackupDecryptionError(f"this backup has format version {header[len(MAGIC)]}, not {VERSION}")
    return uuid_str(header[len(MAGIC) + 1 : len(MAGIC) + 17])


def decrypt_backup(source: BinaryIO, sink: BinaryIO, recovery_key: bytes, user_id: str) -> int:
    """Decrypt a backup of `user_id` into `sink`; the number of plaintext bytes.

    `BackupOwnerError` if its header names another user; `BackupDecryptionError` for a wrong key or
    any altered, cut, appended or replaced byte. `sink` may then hold a prefix, which the caller
    discards."""
    header = source.read(HEADER_SIZE)
    owner = read_backup_owner(header)
    if not hmac.compare_digest(uuid_bytes(owner), uuid_bytes(user_id, field="user_id")):
        raise BackupOwnerError(
            "This backup belongs to another account: the server handed out someone else's backup."
        )
    key = backup_key(recovery_key, header[-SALT_SIZE:])
    try:
        return decrypt_file(source, sink, key, associated_data=header)
    except DecryptionError:
        raise BackupDecryptionError(
            "the recovery key does not open this backup, or the backup was damaged or replaced"
        ) from None

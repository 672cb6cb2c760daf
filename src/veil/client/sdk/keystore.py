"""The client's state at rest: one file, encrypted under a key derived from the user's passphrase.

Layout (all integers big-endian):

    magic "VEILKS" | version u8 = 1 | log2(N) u8 | r u8 | p u8 | salt[16] | nonce[12] | AEAD(JSON state)

The key is Scrypt(passphrase, salt, N, r, p) and the AEAD is ChaCha20-Poly1305 with everything
before the ciphertext as associated data, so the KDF parameters cannot be weakened unnoticed. The
parameters are bounded before use because they are read before they can be authenticated. A wrong
passphrase and a modified file are the same failure (the tag does not verify): `WrongPassphraseError`.

Writes go to a private temporary file in the same directory which then replaces the old file
atomically, so a crash leaves either the old state or the new one, never half of each.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from veil.client.protocol.errors import KeystoreError, KeystoreFormatError, WrongPassphraseError

MAGIC = b"VEILKS"
VERSION = 1
SALT_SIZE = 16
NONCE_SIZE = 12
_PARAMS = struct.Struct(">BBBB")
_HEADER_SIZE = len(MAGIC) + _PARAMS.size + SALT_SIZE + NONCE_SIZE
FILE_MODE = 0o600
# Scrypt needs about 128 * N * r bytes; parameters are read before they can be authenticated, so a
# forged file must not make the client allocate more than this.
MAX_SCRYPT_MEMORY = 2**30


@dataclass(frozen=True)
class ScryptParams:
    """Scrypt cost: N = 2**log2_n, block size r, parallelism p (memory is about 128 * N * r bytes).

    The default (N = 2**17, r = 8, p = 1: 128 MiB, a few hundred milliseconds) follows OWASP's
    recommendation; tests pass cheaper parameters.
    """

    log2_n: int = 17
    r: int = 8
    p: int = 1

    def check(self) -> None:
        """Refuse parameters too weak to protect a passphrase or costly enough to be a denial of service."""
        if not (10 <= self.log2_n <= 22 and 1 <= self.r <= 32 and 1 <= self.p <= 16):
            raise KeystoreFormatError("unsupported Scrypt parameters")
        if 128 * 2**self.log2_n * self.r > MAX_SCRYPT_MEMORY:
            raise KeystoreFormatError("Scrypt parameters needing more than 1 GiB of memory")

    def derive(self, passphrase: str, salt: bytes) -> bytes:
        self.check()
        # NFC so that the same passphrase typed on another system yields the same bytes. A passphrase
        # from the environment that was not UTF-8 arrives with its bytes escaped (PEP 383): use them.
        try:
            secret = unicodedata.normalize("NFC", passphrase).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise KeystoreError("the passphrase is not valid text") from None
        return Scrypt(salt=salt, length=32, n=2**self.log2_n, r=self.r, p=self.p).derive(secret)


def encrypt_state(state: Mapping[str, Any], passphrase: str, params: ScryptParams | None = None) -> bytes:
    """The keystore file contents for `state` (any JSON-serialisable object)."""
    params = params or ScryptParams()
    salt, nonce = os.urandom(SALT_SIZE), os.urandom(NONCE_SIZE)
    header = MAGIC + _PARAMS.pack(VERSION, params.log2_n, params.r, params.p) + salt + nonce
    plaintext = json.dumps(state, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return header + ChaCha20Poly1305(params.derive(passphrase, salt)).encrypt(nonce, plaintext, header)


def decrypt_state(data: bytes, passphrase: str) -> dict[str, Any]:
    """The state inside keystore file contents; raises `WrongPassphraseError` or `KeystoreFormatError`."""
    if len(data) < _HEADER_SIZE + 16 or not data.startswith(MAGIC):
        raise KeystoreFormatError("not a Veil keystore file")
    version, log2_n, r, p = _PARAMS.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise KeystoreFormatError(f"unsupported keystore version {version}")
    salt_at = len(MAGIC) + _PARAMS.size
    salt, nonce = data[salt_at : salt_at + SALT_SIZE], data[salt_at + SALT_SIZE : _HEADER_SIZE]
    key = ScryptParams(log2_n, r, p).derive(passphrase, salt)
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(nonce, data[_HEADER_SIZE:], data[:_HEADER_SIZE])
    except InvalidTag:
        raise WrongPassphraseError("wrong passphrase, or the keystore file was modified") from None
    try:
        state = json.loads(plaintext)
    except ValueError:
        raise KeystoreFormatError("keystore state is not JSON") from None
    if not isinstance(state, dict):
        raise KeystoreFormatError("keystore state is not a JSON object")
    return state


def save_state(
    path: Path, state: Mapping[str, Any], passphrase: str, params: ScryptParams | None = None
) -> None:
    """Encrypt `state` and atomically replace the file at `path` (mode 0600)."""
    data = encrypt_state(state, passphrase, params)
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)


def load_state(path: Path, passphrase: str) -> dict[str, Any]:
    """Read and decrypt the keystore file at `path`."""
    return decrypt_state(Path(path).read_bytes(), passphrase)


def file_stamp(path: Path) -> bytes | None:
    """What tells one write of the keystore at `path` from any other, without the passphrase: its
    header, whose salt and nonce are drawn afresh on every save; None when there is no file."""
    try:
        with Path(path).open("rb") as handle:
            return handle.read(_HEADER_SIZE)
    except FileNotFoundError:
        return None


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

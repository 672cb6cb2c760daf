"""The client's state at rest: one file, encrypted under a key derived from the user's passphrase.

Layout (all integers big-endian):

    magic "VEILKS" | version u8 = 1 | log2(N) u8 | r u8 | p u8 | salt[16] | nonce[12] | AEAD(JSON state)

The key is Scrypt(passphrase, salt, N, r, p) and the AEAD is ChaCha20-Poly1305 with everything
before the ciphertext as associated data, so the KDF parameters cannot be weakened unnoticed. The
parameters are bounded before use because they are read before they can be authenticated. A wrong
passphrase and a modified file are the same failure (the tag does not verify): `WrongPassphraseError`.

One key per key store, derived once (`KeystoreKey`). The salt and Scrypt parameters are drawn when
a key store is created (or its passphrase changes) and stay the same across its saves; only the
nonce is new on every save. That is what lets a process derive the key once (about a second of
Scrypt) and reuse it for every save and every reload after another process wrote, and lets the
unlock agent hold the key instead of the passphrase (docs/adr/0022). Reusing one ChaCha20-Poly1305
key with random 96-bit nonces is sound while nonces do not repeat: after n saves the chance of any
repeat is about n**2 / 2**97, so even 2**32 saves (NIST SP 800-38D's bound for random nonces; a key
store saved a thousand times a day for a century sees about 2**25) leave it below 2**-32. The
header still changes on every save (the nonce), which is how other processes notice a write
(`file_stamp`, docs/adr/0020).

Writes go to a private temporary file in the same directory which then replaces the old file
atomically, so a crash leaves either the old state or the new one, never half of each.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import struct
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
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
KEY_SIZE = 32
_PARAMS = struct.Struct(">BBBB")  # version, log2(N), r, p
_KEY_PARAMS = struct.Struct(">BBB")  # log2(N), r, p
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
        return Scrypt(salt=salt, length=KEY_SIZE, n=2**self.log2_n, r=self.r, p=self.p).derive(secret)


class KeystoreKeyChangedError(WrongPassphraseError):
    """The key store was re-encrypted under a new salt (a new passphrase, or a copy restored from
    elsewhere) since this key was derived: only the passphrase opens it now."""


@dataclass(frozen=True)
class KeystoreKey:
    """The key of one key store with the salt and Scrypt parameters it was derived under: what opens
    and saves that key store without running Scrypt again. As secret as the passphrase while the
    key store keeps its salt."""

    params: ScryptParams
    salt: bytes
    key: bytes = field(repr=False)

    @classmethod
    def new(cls, passphrase: str, params: ScryptParams | None = None) -> KeystoreKey:
        """A key under a fresh salt: for a new key store, or a new passphrase for an existing one."""
        params = params or ScryptParams()
        salt = os.urandom(SALT_SIZE)
        return cls(params, salt, params.derive(passphrase, salt))

    @classmethod
    def of_file(cls, data: bytes, passphrase: str) -> KeystoreKey:
        """The key the key store `data` was written under, if `passphrase` is its passphrase (which
        only opening the state shows)."""
        params, salt, _ = _read_header(data)
        return cls(params, salt, params.derive(passphrase, salt))

    def fits(self, data: bytes) -> bool:
        """Whether the key store `data` was written under this key's salt and parameters."""
        params, salt, _ = _read_header(data)
        return params == self.params and hmac.compare_digest(salt, self.salt)

    def encode(self) -> bytes:
        """log2(N) u8 | r u8 | p u8 | salt[16] | key[32]: how the unlock agent hands it over."""
        params = _KEY_PARAMS.pack(self.params.log2_n, self.params.r, self.params.p)
        return params + self.salt + self.key

    @classmethod
    def decode(cls, data: bytes) -> KeystoreKey:
        if len(data) != _KEY_PARAMS.size + SALT_SIZE + KEY_SIZE:
            raise KeystoreFormatError("not an encoded key store key")
        params = ScryptParams(*_KEY_PARAMS.unpack_from(data))
        params.check()
        salt_at = _KEY_PARAMS.size
        return cls(params, data[salt_at : salt_at + SALT_SIZE], data[salt_at + SALT_SIZE :])


def encrypt_state(
    state: Mapping[str, Any], secret: str | KeystoreKey, params: ScryptParams | None = None
) -> bytes:
    """The keystore file contents for `state` (any JSON-serialisable object), under `secret`: a key
    derived before (same salt as before, new nonce), or a passphrase (a new salt, and `params`)."""
    key = secret if isinstance(secret, KeystoreKey) else KeystoreKey.new(secret, params)
    nonce = os.urandom(NONCE_SIZE)
    header = MAGIC + _PARAMS.pack(VERSION, key.params.log2_n, key.params.r, key.params.p) + key.salt + nonce
    plaintext = json.dumps(state, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return header + ChaCha20Poly1305(key.key).encrypt(nonce, plaintext, header)


def decrypt_state(data: bytes, secret: str | KeystoreKey) -> dict[str, Any]:
    """The state inside keystore file contents; raises `WrongPassphraseError` (or its
    `KeystoreKeyChangedError`, for a key derived under another salt) or `KeystoreFormatError`."""
    if isinstance(secret, KeystoreKey):
        if not secret.fits(data):
            raise KeystoreKeyChangedError("the key store was re-encrypted under another passphrase")
        return _open(data, secret)
    return _open(data, KeystoreKey.of_file(data, secret))


def _read_header(data: bytes) -> tuple[ScryptParams, bytes, bytes]:
    """(parameters, salt, nonce) from the file's first bytes (`file_stamp`'s are enough), the
    parameters bounded (they are not authenticated yet)."""
    if len(data) < _HEADER_SIZE or not data.startswith(MAGIC):
        raise KeystoreFormatError("not a Veil keystore file")
    version, log2_n, r, p = _PARAMS.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise KeystoreFormatError(f"unsupported keystore version {version}")
    params = ScryptParams(log2_n, r, p)
    params.check()
    salt_at = len(MAGIC) + _PARAMS.size
    return params, data[salt_at : salt_at + SALT_SIZE], data[salt_at + SALT_SIZE : _HEADER_SIZE]


def _open(data: bytes, key: KeystoreKey) -> dict[str, Any]:
    _, _, nonce = _read_header(data)
    if len(data) < _HEADER_SIZE + 16:  # not even an AEAD tag after the header
        raise KeystoreFormatError("not a Veil keystore file")
    try:
        plaintext = ChaCha20Poly1305(key.key).decrypt(nonce, data[_HEADER_SIZE:], data[:_HEADER_SIZE])
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
    path: Path, state: Mapping[str, Any], secret: str | KeystoreKey, params: ScryptParams | None = None
) -> None:
    """Encrypt `state` (as `encrypt_state` does) and atomically replace the file at `path` (mode 0600)."""
    data = encrypt_state(state, secret, params)
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


def load_state(path: Path, secret: str | KeystoreKey) -> dict[str, Any]:
    """Read and decrypt the keystore file at `path`."""
    return decrypt_state(Path(path).read_bytes(), secret)


def open_keystore(
    path: Path, *, key: KeystoreKey | None = None, passphrase: str | None = None
) -> tuple[dict[str, Any], KeystoreKey]:
    """The state of the keystore file at `path` and the key that opened it: `key` when the file was
    written under it (no Scrypt), else the key derived from `passphrase` and the file's header.
    Without a passphrase a changed salt is `KeystoreKeyChangedError`."""
    data = Path(path).read_bytes()
    if key is not None and (key.fits(data) or passphrase is None):
        return decrypt_state(data, key), key
    if passphrase is None:
        raise ValueError("opening a key store needs its key or its passphrase")
    key = KeystoreKey.of_file(data, passphrase)
    return _open(data, key), key


def file_stamp(path: Path) -> bytes | None:
    """What tells one write of the keystore at `path` from any other, without the passphrase: its
    header, whose nonce is drawn afresh on every save; None when there is no file."""
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

"""The recovery key of an encrypted backup, and the text a person copies it as.

A recovery key is 32 random bytes. It is shown once, when a backup is made, as 56 characters of
Crockford base32 in 14 groups of four:

    text     = Crockford-base32(key[32] || checksum[3]) in groups of four, joined by "-"
    checksum = first 3 bytes of SHA-256("veil/recovery-key/v1" || key)

The checksum catches a mistyped character (all but one in 16.7 million typos) before anything is
downloaded, so "wrong key" after a download means another key, not a typo. Parsing ignores case,
spaces and dashes, and reads O as 0 and I, L as 1. The key itself never reaches the server: the
backup is encrypted under a key derived from it (protocol/backup.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from veil.client.protocol import crockford

RECOVERY_KEY_SIZE = 32
CHECKSUM_SIZE = 3
GROUP = 4
_CHECKSUM_CONTEXT = b"veil/recovery-key/v1"


class RecoveryKeyTextError(ValueError):
    """Text that is not a recovery key (a typo, a missing group); its message is for people."""


def new_recovery_key() -> bytes:
    return os.urandom(RECOVERY_KEY_SIZE)


def _checksum(key: bytes) -> bytes:
    return hashlib.sha256(_CHECKSUM_CONTEXT + key).digest()[:CHECKSUM_SIZE]


def format_recovery_key(key: bytes) -> str:
    """The text shown to the person (and drawn as a QR code): 14 groups of four characters."""
    if len(key) != RECOVERY_KEY_SIZE:
        raise ValueError(f"a recovery key is {RECOVERY_KEY_SIZE} bytes")
    symbols = crockford.encode(key + _checksum(key))
    return "-".join(symbols[i : i + GROUP] for i in range(0, len(symbols), GROUP))


def parse_recovery_key(text: str) -> bytes:
    """The 32-byte key from typed or scanned text; `RecoveryKeyTextError` when it cannot be one."""
    compact = "".join(text.split()).replace("-", "").upper()
    try:
        raw = crockford.decode(compact, RECOVERY_KEY_SIZE + CHECKSUM_SIZE)
    except ValueError as error:
        raise RecoveryKeyTextError(f"That is not a recovery key: {error}.") from None
    key, checksum = raw[:RECOVERY_KEY_SIZE], raw[RECOVERY_KEY_SIZE:]
    if not hmac.compare_digest(checksum, _checksum(key)):
        raise RecoveryKeyTextError(
            "That is not a recovery key: a character is mistyped (its checksum does not match). "
            "Check each group of four against the copy you kept."
        )
    return key

"""Write tests/vectors/backup.json: known answers for the encrypted backup (the recovery key's text,
the key derived from it, and whole backup objects), computed with the production code from fixed
inputs.

Run once (`python -m tests.vectors.make_backup`); the file it writes is the spec other clients
implement against, so it is never regenerated unless a format version changes. Every recovery key,
salt and user id is fixed here: no randomness reaches the output (the salt, a backup's one random
draw, is passed in).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from veil.client.protocol.backup import backup_header, backup_key, encrypt_backup
from veil.client.protocol.recovery_key import format_recovery_key

OUTPUT = Path(__file__).with_name("backup.json")
GENERATED_BY = (
    "python -m tests.vectors.make_backup (run once; the file is the spec: never regenerate unless the "
    "format version changes)"
)

DESCRIPTION = """\
Known answers for Veil's encrypted backup, format version 1 (docs/e2ee.md "Backups", \
src/veil/client/protocol/backup.py and recovery_key.py), for anyone writing another client. All \
bytes are lowercase hex; UUIDs are canonical strings (what is encoded is always their 16 raw bytes). \
Secrets were made as SHA-256("veil/vectors/backup/" || name). HKDF is RFC 5869 with SHA-256. \
Crockford base32 uses the alphabet 0123456789ABCDEFGHJKMNPQRSTVWXYZ, reads the bytes as one \
big-endian number and pads the last symbol with zero bits. Kinds: recovery_key_text (the text a \
person copies: 32-byte key || 3-byte checksum in base32, groups of four), backup_key (the AES-256-GCM \
key of one backup) and backup_object (a whole object: header, then the chunked AES-256-GCM file \
format of the attachments with the header as associated data of every chunk). The tests in \
tests/unit/client/test_vectors_backup.py recompute every value with the production code, \
decrypt every object, and recompute each from its description with `cryptography` alone."""

USER_ID = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
CHUNK_SIZE = 16


def fixed_secret(name: str) -> bytes:
    return hashlib.sha256(b"veil/vectors/backup/" + name.encode("ascii")).digest()


def recovery_key_text_case(name: str) -> dict[str, Any]:
    key = fixed_secret(name)
    checksum = hashlib.sha256(b"veil/recovery-key/v1" + key).digest()[:3]
    return {
        "name": f"recovery_key_text_{name}",
        "kind": "recovery_key_text",
        "description": (
            'checksum = first 3 bytes of SHA-256("veil/recovery-key/v1" || key); text = Crockford '
            "base32 of key || checksum (35 bytes, 56 symbols) in 14 groups of four joined by '-'. "
            "Parsing ignores case, spaces and dashes and reads O as 0 and I, L as 1; any text whose "
            "checksum does not match is refused."
        ),
        "key": key.hex(),
        "checksum": checksum.hex(),
        "text": format_recovery_key(key),
    }


def backup_key_case() -> dict[str, Any]:
    recovery_key, salt = fixed_secret("recovery-key"), fixed_secret("salt")
    return {
        "name": "backup_key",
        "kind": "backup_key",
        "description": (
            'key = HKDF-SHA256(ikm = recovery_key, salt = salt, info = "veil/backup/v1", length 32).'
        ),
        "recovery_key": recovery_key.hex(),
        "salt": salt.hex(),
        "key": backup_key(recovery_key, salt).hex(),
    }


def backup_object_case(name: str, plaintext: bytes) -> dict[str, Any]:
    recovery_key, salt = fixed_secret("recovery-key"), fixed_secret("salt")
    sink = io.BytesIO()
    result = encrypt_backup(
        io.BytesIO(plaintext), sink, recovery_key, USER_ID, salt=salt, chunk_size=CHUNK_SIZE
    )
    blob = sink.getvalue()
    assert result.sha256 == hashlib.sha256(blob).digest()
    return {
        "name": name,
        "kind": "backup_object",
        "description": (
            'header = "VEILB" || 0x01 || user_id[16] || salt[32] (54 bytes); key = HKDF as in kind '
            'backup_key; file_header = "VEILF" || 0x01 || chunk_size u32 BE; object = header || '
            "file_header || for each chunk i of `chunk_size` plaintext bytes (the last one shorter or "
            "empty): AES-256-GCM(key, nonce = i as 11 bytes BE || 0x01 if last else 0x00, chunk, "
            "aad = file_header || header). sha256 is of the whole object; the plaintext is the backup "
            "document (here any bytes)."
        ),
        "recovery_key": recovery_key.hex(),
        "salt": salt.hex(),
        "user_id": USER_ID,
        "chunk_size": CHUNK_SIZE,
        "header": backup_header(USER_ID, salt).hex(),
        "plaintext": plaintext.hex(),
        "object": blob.hex(),
        "sha256": result.sha256.hex(),
    }


def build() -> dict[str, Any]:
    return {
        "description": DESCRIPTION,
        "generated_by": GENERATED_BY,
        "cases": [
            recovery_key_text_case("recovery-key"),
            recovery_key_text_case("another-recovery-key"),
            backup_key_case(),
            backup_object_case(
                "backup_object_three_chunks",
                b'{"format":"veil-backup/1","history":{}}',
            ),
            backup_object_case("backup_object_empty", b""),
            # A whole number of chunks: the last full chunk carries the last flag, no empty chunk follows.
            backup_object_case(
                "backup_object_exact_chunks", b'{"format":"veil-backup/1","x":"abcdefghijklmno"}'
            ),
        ],
    }


def main() -> None:
    OUTPUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

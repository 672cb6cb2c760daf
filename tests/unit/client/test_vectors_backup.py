"""Known-answer vectors for the encrypted backup (tests/vectors/backup.json): the production code
must reproduce every recorded value and open every recorded object, and the layouts the file's
descriptions state, written out here with `cryptography` alone, must give the same bytes."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from veil.client.protocol.backup import backup_header, backup_key, decrypt_backup, encrypt_backup
from veil.client.protocol.recovery_key import format_recovery_key, parse_recovery_key

VECTORS = Path(__file__).parents[2] / "vectors" / "backup.json"
FILE = json.loads(VECTORS.read_text(encoding="utf-8"))
KINDS = ("recovery_key_text", "backup_key", "backup_object")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def cases(kind: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in FILE["cases"] if case["kind"] == kind]


def _hex(case: dict[str, Any], key: str) -> bytes:
    return bytes.fromhex(case[key])


def test_the_file_states_its_origin_and_covers_every_kind() -> None:
    assert FILE["generated_by"].startswith("python -m tests.vectors.make_backup")
    names = [case["name"] for case in FILE["cases"]]
    assert len(names) == len(set(names))
    assert {case["kind"] for case in FILE["cases"]} == set(KINDS)
    assert all(case["description"] for case in FILE["cases"])


@pytest.mark.parametrize("case", cases("recovery_key_text"))
def test_recovery_key_text(case: dict[str, Any]) -> None:
    key = _hex(case, "key")
    assert format_recovery_key(key) == case["text"]
    assert parse_recovery_key(case["text"].lower()) == key
    # From the description: base32 of key || checksum, grouped by four.
    checksum = hashlib.sha256(b"veil/recovery-key/v1" + key).digest()[:3]
    assert checksum == _hex(case, "checksum")
    number = int.from_bytes(key + checksum, "big")  # 280 bits: exactly 56 symbols, no padding
    symbols = "".join(CROCKFORD[(number >> (5 * (55 - i))) & 31] for i in range(56))
    assert "-".join(symbols[i : i + 4] for i in range(0, 56, 4)) == case["text"]


@pytest.mark.parametrize("case", cases("backup_key"))
def test_backup_key(case: dict[str, Any]) -> None:
    recovery_key, salt = _hex(case, "recovery_key"), _hex(case, "salt")
    assert backup_key(recovery_key, salt).hex() == case["key"]
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"veil/backup/v1").derive(
        recovery_key
    )
    assert derived.hex() == case["key"]


@pytest.mark.parametrize("case", cases("backup_object"))
def test_backup_object(case: dict[str, Any]) -> None:
    recovery_key, salt, plaintext = _hex(case, "recovery_key"), _hex(case, "salt"), _hex(case, "plaintext")
    user_id, chunk_size = case["user_id"], case["chunk_size"]
    header = b"VEILB" + b"\x01" + uuid.UUID(user_id).bytes + salt
    assert header.hex() == case["header"] == backup_header(user_id, salt).hex()

    sink = io.BytesIO()
    result = encrypt_backup(
        io.BytesIO(plaintext), sink, recovery_key, user_id, salt=salt, chunk_size=chunk_size
    )
    assert sink.getvalue().hex() == case["object"]
    assert result.sha256.hex() == case["sha256"] == hashlib.sha256(sink.getvalue()).hexdigest()

    opened = io.BytesIO()
    decrypt_backup(io.BytesIO(_hex(case, "object")), opened, recovery_key, user_id)
    assert opened.getvalue() == plaintext

    # From the description, with the primitives alone.
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"veil/backup/v1").derive(recovery_key)
    file_header = b"VEILF" + b"\x01" + chunk_size.to_bytes(4, "big")
    # The last chunk (full, shorter or, for nothing at all, empty) carries the last flag.
    chunks = [plaintext[i : i + chunk_size] for i in range(0, len(plaintext), chunk_size)] or [b""]
    aead = AESGCM(key)
    body = b"".join(
        aead.encrypt(
            i.to_bytes(11, "big") + (b"\x01" if i == len(chunks) - 1 else b"\x00"),
            chunk,
            file_header + header,
        )
        for i, chunk in enumerate(chunks)
    )
    assert (header + file_header + body).hex() == case["object"]

"""Emailed one-time codes (sign-up, password reset, data-subject requests): six random digits,
stored only as SHA-256 over (the id of what the code confirms || the code), and compared in
constant time. Short enough to type; the callers bound attempts and lifetime."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid


def new_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def code_hash(owner_id: uuid.UUID, code: str) -> bytes:
    return hashlib.sha256(owner_id.bytes + code.encode()).digest()


def code_matches(stored_hash: bytes, owner_id: uuid.UUID, code: str) -> bool:
    return hmac.compare_digest(stored_hash, code_hash(owner_id, code))

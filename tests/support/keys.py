"""Real key material for tests that publish bundles, made with `cryptography`."""

from __future__ import annotations

import base64
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def x25519_public() -> bytes:
    return X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def one_time_prekeys(count: int, first_id: int = 1) -> list[dict[str, Any]]:
    return [{"key_id": first_id + i, "public_key": b64(x25519_public())} for i in range(count)]


def bundle(one_time: int = 5, signed_prekey_id: int = 1, first_one_time_id: int = 1) -> dict[str, Any]:
    signing = Ed25519PrivateKey.generate()
    signed_prekey = x25519_public()
    return {
        "identity_key": b64(x25519_public()),
        "signing_key": b64(signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
        "signed_prekey": {
            "key_id": signed_prekey_id,
            "public_key": b64(signed_prekey),
            "signature": b64(signing.sign(signed_prekey)),
        },
        "one_time_prekeys": one_time_prekeys(one_time, first_one_time_id),
    }


def random_envelope(device_id: str, size: int = 80) -> dict[str, str]:
    return {
        "device_id": device_id,
        "ciphertext": b64(os.urandom(size)),
        "nonce": b64(os.urandom(12)),
        "auth_tag": b64(os.urandom(16)),
    }

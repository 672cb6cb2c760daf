"""The log's leaf: a canonical, fixed-width encoding of one state of a user's keys.

The bytes are built by the database (migration 0018, at commit of the change they record); this
module is the same definition in Python, for clients, monitors, `veil transparency verify` and the
tests. All integers big-endian.

    user      32  SHA-256(b"veil/transparency/user/v1" || user_id as 16 raw bytes)
    version    8  the user's leaf count so far, from 1 (u64)
    master    32  the master key; 32 zero bytes for none (the account was purged)
    devices   32  SHA-256 over the certified devices in ascending order of their raw device_id,
                  each device_id (16) || identity_key (32) || signing_key (32) || certificate (64);
                  SHA-256 of no bytes when no device is certified

The user id is carried as its hash (docs/adr/0019): whoever asks about a user knows the id and can
check it, while `GET /v1/transparency/entries` lists no user ids.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

USER_CONTEXT = b"veil/transparency/user/v1"
LEAF_SIZE = 104
NO_MASTER_KEY = bytes(32)


@dataclass(frozen=True)
class CertifiedDevice:
    device_id: uuid.UUID
    identity_key: bytes
    signing_key: bytes
    certificate: bytes


@dataclass(frozen=True)
class Leaf:
    user_hash: bytes
    version: int
    master_key: bytes
    devices_hash: bytes

    def encode(self) -> bytes:
        return self.user_hash + self.version.to_bytes(8, "big") + self.master_key + self.devices_hash

    @classmethod
    def decode(cls, raw: bytes) -> Leaf:
        if len(raw) != LEAF_SIZE:
            raise ValueError(f"a leaf is {LEAF_SIZE} bytes, not {len(raw)}")
        return cls(raw[:32], int.from_bytes(raw[32:40], "big"), raw[40:72], raw[72:104])

    def is_of(self, user_id: uuid.UUID) -> bool:
        return self.user_hash == user_hash(user_id)


def user_hash(user_id: uuid.UUID) -> bytes:
    return hashlib.sha256(USER_CONTEXT + user_id.bytes).digest()


def devices_hash(devices: Iterable[CertifiedDevice]) -> bytes:
    digest = hashlib.sha256()
    for device in sorted(devices, key=lambda d: d.device_id.bytes):
        if (len(device.identity_key), len(device.signing_key), len(device.certificate)) != (32, 32, 64):
            raise ValueError("identity and signing keys are 32 bytes, a certificate 64")
        digest.update(device.device_id.bytes + device.identity_key + device.signing_key + device.certificate)
    return digest.digest()


def leaf_for(
    user_id: uuid.UUID, version: int, master_key: bytes | None, devices: Iterable[CertifiedDevice]
) -> Leaf:
    return Leaf(user_hash(user_id), version, master_key or NO_MASTER_KEY, devices_hash(devices))

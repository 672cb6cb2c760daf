"""Helpers for the client tests: devices, and a stand-in for the key directory.

No network and no server: `Directory` does what the keys service does with a bundle (store the
public part, hand each one-time prekey out once), and `stored` adds what the messaging service
adds to an envelope, so the tests exercise exactly the wire shapes.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from veil.client.protocol.session import ClientCrypto

# A fixed clock for tests that do not exercise expiry (seconds since the epoch).
NOW = 1_800_000_000.0


def new_device(
    user_id: str | None = None, *, one_time: int = 3, epoch_grace_seconds: float = 3600.0
) -> ClientCrypto:
    return ClientCrypto.create(
        user_id or str(uuid.uuid4()),
        str(uuid.uuid4()),
        one_time=one_time,
        epoch_grace_seconds=epoch_grace_seconds,
    )


def roster_hash(*members: ClientCrypto) -> bytes:
    """A roster hash for these members' users (the shape of `membership.roster_hash`, computed here
    so these tests do not depend on the membership module)."""
    ids = sorted({uuid.UUID(member.user_id).bytes for member in members})
    return hashlib.sha256(b"veil/roster/v1" + b"".join(ids)).digest()


class Directory:
    """The server's view of published keys: public bundles only, one-time prekeys handed out once."""

    def __init__(self) -> None:
        self._bundles: dict[str, dict[str, Any]] = {}

    def publish(self, device: ClientCrypto) -> None:
        self._bundles[device.device_id] = device.bundle()

    def claim(self, device: ClientCrypto, *, with_one_time: bool = True) -> dict[str, Any]:
        bundle = self._bundles[device.device_id]
        pool: list[dict[str, Any]] = bundle["one_time_prekeys"]
        return {
            "device_id": device.device_id,
            "identity_key": bundle["identity_key"],
            "signing_key": bundle["signing_key"],
            "signed_prekey": dict(bundle["signed_prekey"]),
            "one_time_prekey": pool.pop(0) if with_one_time and pool else None,
        }


def stored(
    envelope: dict[str, Any], conversation_id: str, sender: ClientCrypto, seq: int = 1
) -> dict[str, Any]:
    """A message envelope as `GET …/messages` returns it."""
    return {
        **envelope,
        "conversation_id": conversation_id,
        "sender_id": sender.user_id,
        "sender_device_id": sender.device_id,
        "seq": seq,
        "created_at": "2026-01-01T00:00:00.000Z",
    }


def connect(directory: Directory, a: ClientCrypto, b: ClientCrypto, *, with_one_time: bool = True) -> None:
    """Give `a` and `b` a pairwise session (a initiates, b accepts)."""
    directory.publish(b)
    init = a.start_session(b.user_id, b.device_id, directory.claim(b, with_one_time=with_one_time), b"hi")
    assert b.decrypt_device_message(a.user_id, a.device_id, "session_init", init) == b"hi"

"""The bytes of a membership commit: a statement signed by the device that changes a group's
membership (see `membership.py` for who may make which change, and docs/e2ee.md for the format).

    commit = body || Ed25519 signature (64) by the acting device's signing key over body
    body   = length_prefixed(b"veil/commit/v1", conversation_id(16), epoch u64, action, actor(16),
                             actor_device(16), subject(16), role, roster_hash(32), previous_hash(32),
                             identity_key(32), signing_key(32), certificate(64))

The `created` commit names the nil conversation id: the server assigns the id after the request
(and its commit) was made; every later commit names the real id and links back by hash.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from veil.client.protocol.codec import (
    U64_MAX,
    canonical_uuid,
    length_prefixed,
    u64,
    uuid_bytes,
    uuid_str,
)
from veil.client.protocol.errors import MembershipError

COMMIT_LABEL = b"veil/commit/v1"
ROSTER_LABEL = b"veil/roster/v1"
HASH_SIZE = 32
SIGNATURE_SIZE = 64
NO_PREVIOUS = bytes(HASH_SIZE)
CREATION_CONVERSATION_ID = "00000000-0000-0000-0000-000000000000"
MAX_COMMIT = 16 * 1024
ACTIONS = ("created", "invited", "joined", "declined", "left", "removed", "role_changed")
ASSIGNABLE_ROLES = ("admin", "member")
# The body's fields in order: a fixed size, or None for the label, action and role.
_BODY_SIZES: tuple[int | None, ...] = (None, 16, 8, None, 16, 16, 16, None, 32, 32, 32, 32, 64)


def roster_hash(user_ids: Iterable[str]) -> bytes:
    """SHA-256 over the label and the sorted 16-byte ids: one value per set, whatever the spelling."""
    ids = sorted({uuid_bytes(user_id, field="user_id") for user_id in user_ids})
    return hashlib.sha256(ROSTER_LABEL + b"".join(ids)).digest()


def commit_hash(commit: bytes) -> bytes:
    """SHA-256 of a whole commit (signature included): what the next commit names as its previous."""
    return hashlib.sha256(commit).digest()


@dataclass(frozen=True)
class Commit:
    """One signed membership change, as its acting device made it."""

    conversation_id: str
    epoch: int
    action: str
    actor_id: str
    actor_device_id: str
    subject_id: str
    role: str
    roster_hash: bytes
    previous_hash: bytes
    identity_key: bytes
    signing_key: bytes
    certificate: bytes
    signature: bytes

    def body(self) -> bytes:
        """The signed part: every field but the signature."""
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if self.role not in (ASSIGNABLE_ROLES if self.action == "role_changed" else ("",)):
            raise ValueError("role must be admin or member for role_changed, empty otherwise")
        if not 0 <= self.epoch <= U64_MAX:
            raise ValueError("epoch out of range")
        body = length_prefixed(
            COMMIT_LABEL,
            uuid_bytes(self.conversation_id, field="conversation_id"),
            u64(self.epoch),
            self.action.encode("ascii"),
            uuid_bytes(self.actor_id, field="actor_id"),
            uuid_bytes(self.actor_device_id, field="actor_device_id"),
            uuid_bytes(self.subject_id, field="subject_id"),
            self.role.encode("ascii"),
            self.roster_hash,
            self.previous_hash,
            self.identity_key,
            self.signing_key,
            self.certificate,
        )
        _split_body(body)  # the same size checks a reader applies
        return body

    def encode(self) -> bytes:
        if len(self.signature) != SIGNATURE_SIZE:
            raise ValueError(f"signature must be {SIGNATURE_SIZE} bytes")
        return self.body() + self.signature

    @classmethod
    def parse(cls, data: bytes) -> Commit:
        """Read a commit strictly: one encoding per commit, or `MembershipError`."""
        if len(data) > MAX_COMMIT:
            raise MembershipError("commit is larger than 16 KiB")
        try:
            fields, end = _split_body(data)
        except ValueError as error:
            raise MembershipError(f"commit is malformed: {error}") from None
        if len(data) - end != SIGNATURE_SIZE:
            raise MembershipError("commit signature must be exactly 64 bytes at the end")
        label, conversation, epoch, action, actor, device, subject, role = fields[:8]
        if label != COMMIT_LABEL:
            raise MembershipError("commit label is not veil/commit/v1")
        commit = cls(
            conversation_id=uuid_str(conversation),
            epoch=struct.unpack(">Q", epoch)[0],
            action=action.decode("ascii", errors="replace"),
            actor_id=uuid_str(actor),
            actor_device_id=uuid_str(device),
            subject_id=uuid_str(subject),
            role=role.decode("ascii", errors="replace"),
            roster_hash=fields[8],
            previous_hash=fields[9],
            identity_key=fields[10],
            signing_key=fields[11],
            certificate=fields[12],
            signature=data[end:],
        )
        try:
            if commit.encode() != data:
                raise ValueError("it does not re-encode to the same bytes")
        except ValueError as error:
            raise MembershipError(f"commit is malformed: {error}") from None
        return commit

    def signature_verifies(self) -> bool:
        """Whether the signature is the commit's own signing key's over its body."""
        try:
            Ed25519PublicKey.from_public_bytes(self.signing_key).verify(self.signature, self.body())
        except (InvalidSignature, ValueError):
            return False
        return True


def _split_body(data: bytes) -> tuple[list[bytes], int]:
    """The body's fields (sizes checked) and where the body ends."""
    fields: list[bytes] = []
    offset = 0
    for size in _BODY_SIZES:
        if len(data) < offset + 4:
            raise ValueError("truncated")
        (length,) = struct.unpack_from(">I", data, offset)
        offset += 4
        if len(data) < offset + length:
            raise ValueError("truncated")
        if (size is not None and length != size) or (size is None and not 0 <= length <= 64):
            raise ValueError(f"field {len(fields)} has length {length}")
        fields.append(data[offset : offset + length])
        offset += length
    return fields, offset


def make_commit(
    *,
    conversation_id: str,
    epoch: int,
    action: str,
    actor_id: str,
    actor_device_id: str,
    signing: Ed25519PrivateKey,
    identity_key: bytes,
    certificate: bytes,
    subject_id: str,
    role: str,
    roster_hash: bytes,
    previous_hash: bytes,
) -> bytes:
    """A commit signed by the acting device (`signing` is its signing key, `DeviceKeys.signing`)."""
    unsigned = Commit(
        canonical_uuid(conversation_id, field="conversation_id"),
        epoch,
        action,
        canonical_uuid(actor_id, field="actor_id"),
        canonical_uuid(actor_device_id, field="actor_device_id"),
        canonical_uuid(subject_id, field="subject_id"),
        role,
        roster_hash,
        previous_hash,
        identity_key,
        signing.public_key().public_bytes_raw(),
        certificate,
        bytes(SIGNATURE_SIZE),
    )
    return replace(unsigned, signature=signing.sign(unsigned.body())).encode()


def creation_commit(
    *,
    actor_id: str,
    actor_device_id: str,
    signing: Ed25519PrivateKey,
    identity_key: bytes,
    certificate: bytes,
) -> bytes:
    """The commit of `POST /v1/conversations` for a group, made before the server assigns its id."""
    return make_commit(
        conversation_id=CREATION_CONVERSATION_ID,
        epoch=0,
        action="created",
        actor_id=actor_id,
        actor_device_id=actor_device_id,
        signing=signing,
        identity_key=identity_key,
        certificate=certificate,
        subject_id=actor_id,
        role="",
        roster_hash=roster_hash([actor_id]),
        previous_hash=NO_PREVIOUS,
    )

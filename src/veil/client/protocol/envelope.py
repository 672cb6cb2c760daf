"""AEAD sealing with the envelope's metadata bound in, and the base64 wire shape of the result.

The server stores ciphertext next to metadata it controls (who sent it, where, which epoch, what
kind). Binding that metadata as associated data means the server (or anyone) cannot move a
ciphertext to another conversation, sender, message id, content type or epoch without the
receiver's decryption failing. The binding is a length-prefixed list of fields that starts with a
purpose label, so a device-message binding can never equal a group-message binding.

What we call `ciphertext` on the wire is `header || AEAD ciphertext` (plus a signature trailer for
group messages, see `sender_keys`); the 16-byte Poly1305 tag is split off into `auth_tag`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from veil.client.protocol.codec import (
    U64_MAX,
    b64decode,
    b64encode,
    length_prefixed,
    read_int,
    read_str,
    u64,
    uuid_bytes,
)
from veil.client.protocol.errors import DecryptionError

NONCE_SIZE = 12
TAG_SIZE = 16
MAX_CIPHERTEXT = 65536
ROSTER_HASH_SIZE = 32

DEVICE_CONTENT_TYPES = frozenset({"session_init", "session_message", "sender_key"})
_GROUP_LABEL = b"veil/group-message/v2"
_DEVICE_LABEL = b"veil/device-message/v1"


def _content_type_bytes(content_type: str) -> bytes:
    if not content_type or len(content_type) > 64 or not content_type.isascii():
        raise ValueError("content_type must be 1 to 64 ASCII characters")
    return content_type.encode("ascii")


@dataclass(frozen=True)
class GroupContext:
    """The server-visible fields of a conversation message that its ciphertext is bound to.

    `roster_hash` is not on the wire: it is the SHA-256 of the roster at `key_epoch` as the sender
    (when sealing) or the receiver (when opening) verified it, so a message sealed under one view of
    the membership opens only under the same view. `parent_id` is bound too (empty when absent) so
    a reply cannot be re-threaded. `seq` and `created_at` are not: the server assigns them after
    encryption.
    """

    conversation_id: str
    message_id: str
    sender_id: str
    sender_device_id: str
    content_type: str
    key_epoch: int
    roster_hash: bytes
    parent_id: str | None = None

    def encode(self) -> bytes:
        if not 0 <= self.key_epoch <= U64_MAX:
            raise ValueError("key_epoch out of range")
        return length_prefixed(
            _GROUP_LABEL,
            uuid_bytes(self.conversation_id, field="conversation_id"),
            uuid_bytes(self.message_id, field="message_id"),
            uuid_bytes(self.sender_id, field="sender_id"),
            uuid_bytes(self.sender_device_id, field="sender_device_id"),
            _content_type_bytes(self.content_type),
            u64(self.key_epoch),
            check_roster_hash(self.roster_hash),
            b"" if self.parent_id is None else uuid_bytes(self.parent_id, field="parent_id"),
        )

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any], roster_hash: bytes) -> GroupContext:
        """The context of a stored envelope as the server returns it, under the caller's roster view."""
        parent_id = envelope.get("parent_id")
        if parent_id is not None and not isinstance(parent_id, str):
            raise ValueError("parent_id must be a string or null")
        return cls(
            conversation_id=read_str(envelope, "conversation_id"),
            message_id=read_str(envelope, "message_id"),
            sender_id=read_str(envelope, "sender_id"),
            sender_device_id=read_str(envelope, "sender_device_id"),
            content_type=read_str(envelope, "content_type"),
            key_epoch=read_int(envelope, "key_epoch"),
            roster_hash=check_roster_hash(roster_hash),
            parent_id=parent_id,
        )


def check_roster_hash(roster_hash: bytes) -> bytes:
    """`roster_hash` itself if it is 32 bytes; `ValueError` otherwise."""
    if not isinstance(roster_hash, bytes) or len(roster_hash) != ROSTER_HASH_SIZE:
        raise ValueError(f"roster_hash must be {ROSTER_HASH_SIZE} bytes")
    return roster_hash


@dataclass(frozen=True)
class DeviceContext:
    """The fields a device-to-device message is bound to: who it is for, who sent it, what kind."""

    recipient_device_id: str
    sender_id: str
    sender_device_id: str
    content_type: str

    def encode(self) -> bytes:
        if self.content_type not in DEVICE_CONTENT_TYPES:
            raise ValueError(f"device content_type must be one of {sorted(DEVICE_CONTENT_TYPES)}")
        return length_prefixed(
            _DEVICE_LABEL,
            uuid_bytes(self.recipient_device_id, field="recipient_device_id"),
            uuid_bytes(self.sender_id, field="sender_id"),
            uuid_bytes(self.sender_device_id, field="sender_device_id"),
            _content_type_bytes(self.content_type),
        )


@dataclass(frozen=True)
class Sealed:
    """The three binary envelope fields: framed ciphertext, nonce and tag."""

    ciphertext: bytes
    nonce: bytes
    tag: bytes

    def to_wire(self) -> dict[str, str]:
        """`{ciphertext, nonce, auth_tag}` in base64."""
        return {
            "ciphertext": b64encode(self.ciphertext),
            "nonce": b64encode(self.nonce),
            "auth_tag": b64encode(self.tag),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Sealed:
        """Parse the binary fields of an envelope; other members of `data` are ignored."""
        try:
            ciphertext = b64decode(data.get("ciphertext"), field="ciphertext")
            nonce = b64decode(data.get("nonce"), size=NONCE_SIZE, field="nonce")
            tag = b64decode(data.get("auth_tag"), size=TAG_SIZE, field="auth_tag")
        except ValueError as error:
            raise DecryptionError(str(error)) from None
        if not 1 <= len(ciphertext) <= MAX_CIPHERTEXT:
            raise DecryptionError("ciphertext length out of range")
        return cls(ciphertext, nonce, tag)


def _associated_data(context: bytes, header: bytes) -> bytes:
    return context + length_prefixed(header)


def ensure_fits(header_size: int, plaintext_size: int, reserve: int = 0) -> None:
    """Refuse a plaintext whose framed ciphertext would exceed the server's limit.

    Callers check before advancing a chain, so a refused message leaves no gap in it.
    """
    if header_size + plaintext_size + reserve > MAX_CIPHERTEXT:
        raise ValueError(f"message too large: the framed ciphertext must stay within {MAX_CIPHERTEXT} bytes")


def seal(key: bytes, header: bytes, plaintext: bytes, context: bytes, *, reserve: int = 0) -> Sealed:
    """Encrypt `plaintext` under a one-use `key`, binding `context` and `header`.

    `reserve` is room the caller will append to the ciphertext afterwards (a signature), counted
    against the server's ciphertext limit.
    """
    ensure_fits(len(header), len(plaintext), reserve)
    nonce = os.urandom(NONCE_SIZE)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, plaintext, _associated_data(context, header))
    return Sealed(header + sealed[:-TAG_SIZE], nonce, sealed[-TAG_SIZE:])


def open_sealed(key: bytes, sealed: Sealed, header_size: int, context: bytes) -> bytes:
    """Decrypt what `seal` produced; any change to key, context, header, body, nonce or tag fails."""
    header, body = sealed.ciphertext[:header_size], sealed.ciphertext[header_size:]
    try:
        return ChaCha20Poly1305(key).decrypt(
            sealed.nonce, body + sealed.tag, _associated_data(context, header)
        )
    except InvalidTag:
        raise DecryptionError("authentication failed") from None

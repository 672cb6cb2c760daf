"""A group's name and description, end-to-end encrypted into the conversation's `encrypted_meta`.

    meta           = 0x01 || length_prefixed(name utf-8, description utf-8)
    encrypted_meta = nonce (12) || ChaCha20-Poly1305(meta key, nonce, meta, aad = META_LABEL)
    key payload    = length_prefixed(KEY_PAYLOAD_LABEL, conversation_id (16), meta key (32))

Each group has its own random 32-byte meta key, made by its creator and handed to members' devices
in a key payload (a `session_message`, like a sender key over the pairwise sessions). The server
assigns the conversation id only in the response to the request that stores `encrypted_meta`, so
the associated data cannot name it (the `created` commit names the nil id for the same reason);
the key binds the meta to its group instead: it exists for one group only, and the key payload
that delivers it names the conversation, so a meta moved to another group does not open there.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from veil.client.protocol.codec import canonical_uuid, length_prefixed, u32, uuid_bytes, uuid_str
from veil.client.protocol.errors import DecryptionError, MalformedMessageError

META_KEY_SIZE = 32
META_LABEL = b"veil/group-meta/v1"
KEY_PAYLOAD_LABEL = b"veil/group-meta-key/v1"
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 1000
_VERSION = b"\x01"
_NONCE_SIZE = 12
_KEY_PAYLOAD_PREFIX = length_prefixed(KEY_PAYLOAD_LABEL)


@dataclass(frozen=True)
class GroupMeta:
    """What members see of a group: a name (1 to 100 characters) and a description (up to 1000).

    Construction checks both (`ValueError`), so every encoded meta fits the server's 4 KiB bound."""

    name: str
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name.strip() or len(self.name) > MAX_NAME_CHARS:
            raise ValueError(f"a group's name must have 1 to {MAX_NAME_CHARS} characters")
        if len(self.description) > MAX_DESCRIPTION_CHARS:
            raise ValueError(f"a group's description must have at most {MAX_DESCRIPTION_CHARS} characters")

    def encode(self) -> bytes:
        return _VERSION + length_prefixed(self.name.encode("utf-8"), self.description.encode("utf-8"))

    @classmethod
    def decode(cls, data: bytes) -> GroupMeta:
        """Read a meta strictly: one encoding per meta, or `MalformedMessageError`."""
        if data[:1] != _VERSION:
            raise MalformedMessageError("group meta of an unknown version")
        fields, offset = [], 1
        for _ in range(2):
            if len(data) < offset + 4:
                raise MalformedMessageError("group meta is truncated")
            (size,) = struct.unpack_from(">I", data, offset)
            offset += 4
            if len(data) < offset + size:
                raise MalformedMessageError("group meta is truncated")
            fields.append(data[offset : offset + size])
            offset += size
        if offset != len(data):
            raise MalformedMessageError("group meta has trailing bytes")
        try:
            return cls(fields[0].decode("utf-8"), fields[1].decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise MalformedMessageError(f"group meta is not acceptable: {error}") from None


def new_meta_key() -> bytes:
    """A fresh meta key for one group (never reuse one for another group)."""
    return os.urandom(META_KEY_SIZE)


def seal_meta(key: bytes, meta: GroupMeta) -> bytes:
    """`encrypted_meta` for the server: a random nonce, then the AEAD ciphertext of the meta."""
    _check_key(key)
    nonce = os.urandom(_NONCE_SIZE)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, meta.encode(), META_LABEL)


def open_meta(key: bytes, sealed: bytes) -> GroupMeta:
    """The meta inside `encrypted_meta`; `DecryptionError` if it was not sealed under `key`."""
    _check_key(key)
    if len(sealed) < _NONCE_SIZE + 16:
        raise DecryptionError("encrypted group meta is shorter than a nonce and a tag")
    try:
        plaintext = ChaCha20Poly1305(key).decrypt(sealed[:_NONCE_SIZE], sealed[_NONCE_SIZE:], META_LABEL)
    except InvalidTag:
        raise DecryptionError("the group meta does not open under this group's key") from None
    return GroupMeta.decode(plaintext)


@dataclass(frozen=True)
class MetaKeyPayload:
    """A group's meta key as one member's device hands it to another over their pairwise session."""

    conversation_id: str
    key: bytes

    def __post_init__(self) -> None:
        _check_key(self.key)
        object.__setattr__(self, "conversation_id", canonical_uuid(self.conversation_id))

    def encode(self) -> bytes:
        return length_prefixed(KEY_PAYLOAD_LABEL, uuid_bytes(self.conversation_id), self.key)

    @classmethod
    def decode(cls, data: bytes) -> MetaKeyPayload:
        """Read a key payload strictly, or `MalformedMessageError`."""
        if not is_meta_key_payload(data):
            raise MalformedMessageError("not a group meta key payload")
        rest = data[len(_KEY_PAYLOAD_PREFIX) :]
        if (
            len(rest) != 4 + 16 + 4 + META_KEY_SIZE
            or rest[:4] != u32(16)
            or rest[20:24] != u32(META_KEY_SIZE)
        ):
            raise MalformedMessageError("group meta key payload has wrong field sizes")
        return cls(uuid_str(rest[4:20]), rest[24:])


def is_meta_key_payload(plaintext: bytes) -> bool:
    """Whether a `session_message` plaintext is a meta key payload (it starts with its label)."""
    return plaintext.startswith(_KEY_PAYLOAD_PREFIX)


def _check_key(key: bytes) -> None:
    if len(key) != META_KEY_SIZE:
        raise ValueError(f"a group meta key has {META_KEY_SIZE} bytes")

"""Binary headers that travel at the front of `ciphertext`, ahead of the AEAD output.

The server envelope has only `ciphertext`, `nonce` and `auth_tag`, so whatever the receiver needs
before it can pick a key (X3DH inputs, a session id, a ratchet header, a chain counter) is framed
here. Every frame starts with a version byte and a type byte; all integers are big-endian and every
header has a fixed size, so parsing is a single `struct.unpack` with nothing to interpret. Headers
are not secret, but they are authenticated: the AEAD's associated data includes them.

    session_init     ver=2 | type=1 | IK_a[32] | EK_a[32] | spk_id u32 | has_opk u8 | opk_id u32
                     | DHs[32] | pn u32 | n u32                                                  115 bytes
    session_init_pq  ver=2 | type=4 | IK_a[32] | EK_a[32] | spk_id u32 | has_opk u8 | opk_id u32
                     | pq_key_id u32 | CT[1088] | DHs[32] | pn u32 | n u32                     1207 bytes
    session_message  ver=2 | type=2 | session_id[16] | DHs[32] | pn u32 | n u32                 58 bytes
    group_message    ver=2 | type=3 | key_id u32 | iteration u32                                 10 bytes
    sender key dist. ver=2 | type=0x11 | conversation_id[16] | epoch u64 | roster_hash[32] | key_id u32
                     | iteration u32 | chain_key[32] | signing_public_key[32]                  130 bytes

A pairwise frame is a prefix (everything before DHs: 75 bytes for `session_init`, 1167 for
`session_init_pq`, 18 for `session_message`) followed by the 40-byte Double Ratchet header
`DHs | pn | n`: the sender's current ratchet public key, the length of its previous sending chain,
and the message's index in the current one. `has_opk` is 0 or 1 and `opk_id` is 0 when `has_opk`
is 0, so each header has one encoding. `session_init_pq` is a `session_init` whose set-up is PQXDH
(see `pqxdh`): it adds the id of the responder's ML-KEM-768 prekey and the KEM ciphertext; the
device message's content type stays `session_init` and the type byte tells the two apart.
Version 1 frames (the hash-ratchet sessions) are refused as an unsupported version. The
sender key distribution's type 0x11 replaced 0x10 (which had no roster hash): a receiver of a 0x10
frame refuses it as an unknown type rather than installing a key bound to no roster.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from veil.client.protocol.errors import MalformedMessageError
from veil.client.protocol.pqxdh import PQ_CIPHERTEXT_SIZE

VERSION = 2


class FrameType(IntEnum):
    """The second byte of every frame."""

    SESSION_INIT = 1
    SESSION_MESSAGE = 2
    GROUP_MESSAGE = 3
    SESSION_INIT_PQ = 4
    SENDER_KEY_DISTRIBUTION = 0x11


def _unpack(layout: struct.Struct, frame_type: FrameType, data: bytes) -> tuple[object, ...]:
    """Unpack a fixed-size header from the front of `data`, checking version and type."""
    if len(data) < layout.size:
        raise MalformedMessageError(f"{frame_type.name.lower()} frame is shorter than its header")
    fields = layout.unpack_from(data)
    if fields[0] != VERSION:
        raise MalformedMessageError(f"unsupported frame version {fields[0]}")
    if fields[1] != frame_type:
        raise MalformedMessageError(f"expected a {frame_type.name.lower()} frame, got type {fields[1]}")
    return tuple(fields[2:])


def _as_int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _as_bytes(value: object) -> bytes:
    assert isinstance(value, bytes)
    return value


@dataclass(frozen=True)
class PQEncapsulation:
    """The PQXDH part of a `session_init_pq`: the responder's ML-KEM-768 prekey the initiator
    encapsulated to, and the resulting ciphertext."""

    prekey_id: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        # struct's "1088s" would silently pad or cut a ciphertext of another size.
        if len(self.ciphertext) != PQ_CIPHERTEXT_SIZE:
            raise ValueError(f"an ML-KEM-768 ciphertext is {PQ_CIPHERTEXT_SIZE} bytes")


@dataclass(frozen=True)
class SessionInitHeader:
    """The prefix of a `session_init` (or, with `pq`, `session_init_pq`) frame: what a responder
    needs to repeat the initiator's X3DH (or PQXDH).

    The frame's ratchet header follows it (see `RatchetHeader`).
    """

    identity_key: bytes
    ephemeral_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None
    pq: PQEncapsulation | None = None

    LAYOUT = struct.Struct(">BB32s32sIBI")
    PQ_LAYOUT = struct.Struct(f">BB32s32sIBII{PQ_CIPHERTEXT_SIZE}s")

    @property
    def size(self) -> int:
        """The length of this prefix in the frame (where the ratchet header starts)."""
        return self.LAYOUT.size if self.pq is None else self.PQ_LAYOUT.size

    def encode(self) -> bytes:
        has_opk = self.one_time_prekey_id is not None
        fields = (
            self.identity_key,
            self.ephemeral_key,
            self.signed_prekey_id,
            int(has_opk),
            self.one_time_prekey_id or 0,
        )
        if self.pq is None:
            return self.LAYOUT.pack(VERSION, FrameType.SESSION_INIT, *fields)
        return self.PQ_LAYOUT.pack(
            VERSION, FrameType.SESSION_INIT_PQ, *fields, self.pq.prekey_id, self.pq.ciphertext
        )

    @classmethod
    def decode(cls, data: bytes) -> SessionInitHeader:
        """Parse either frame type; the type byte (second) decides which."""
        pq: PQEncapsulation | None = None
        if len(data) >= 2 and data[1] == FrameType.SESSION_INIT_PQ:
            identity_key, ephemeral_key, spk_id, has_opk, opk_id, pq_id, ciphertext = _unpack(
                cls.PQ_LAYOUT, FrameType.SESSION_INIT_PQ, data
            )
            pq = PQEncapsulation(_as_int(pq_id), _as_bytes(ciphertext))
        else:
            identity_key, ephemeral_key, spk_id, has_opk, opk_id = _unpack(
                cls.LAYOUT, FrameType.SESSION_INIT, data
            )
        if has_opk not in (0, 1) or (has_opk == 0 and opk_id != 0):
            raise MalformedMessageError("session_init one-time prekey fields are not canonical")
        return cls(
            identity_key=_as_bytes(identity_key),
            ephemeral_key=_as_bytes(ephemeral_key),
            signed_prekey_id=_as_int(spk_id),
            one_time_prekey_id=_as_int(opk_id) if has_opk else None,
            pq=pq,
        )


@dataclass(frozen=True)
class SessionMessageHeader:
    """The prefix of a `session_message` frame: which pairwise session it belongs to.

    The frame's ratchet header follows it (see `RatchetHeader`).
    """

    session_id: bytes

    LAYOUT = struct.Struct(">BB16s")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(VERSION, FrameType.SESSION_MESSAGE, self.session_id)

    @classmethod
    def decode(cls, data: bytes) -> SessionMessageHeader:
        (session_id,) = _unpack(cls.LAYOUT, FrameType.SESSION_MESSAGE, data)
        return cls(_as_bytes(session_id))


@dataclass(frozen=True)
class RatchetHeader:
    """The Double Ratchet header `DHs | pn | n` that follows a pairwise frame's prefix.

    `ratchet_key` is the sender's current ratchet public key, `previous_chain_length` the number
    of messages in its previous sending chain, `index` this message's place in the current one.
    """

    ratchet_key: bytes
    previous_chain_length: int
    index: int

    LAYOUT = struct.Struct(">32sII")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(self.ratchet_key, self.previous_chain_length, self.index)

    @classmethod
    def decode(cls, data: bytes, offset: int) -> RatchetHeader:
        """The ratchet header at `offset` in `data` (right after the frame's prefix)."""
        if len(data) < offset + cls.LAYOUT.size:
            raise MalformedMessageError("pairwise frame is shorter than its ratchet header")
        ratchet_key, previous_chain_length, index = cls.LAYOUT.unpack_from(data, offset)
        return cls(ratchet_key, previous_chain_length, index)


@dataclass(frozen=True)
class GroupMessageHeader:
    """Which sender key (`key_id`) of the sending device, and which message of its chain.

    The conversation, epoch and sender device come from the envelope's metadata; `key_id` picks
    one of the keys a receiver holds for that sender device, so a message on the previous key
    still opens after a rotation.
    """

    key_id: int
    iteration: int

    LAYOUT = struct.Struct(">BBII")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(VERSION, FrameType.GROUP_MESSAGE, self.key_id, self.iteration)

    @classmethod
    def decode(cls, data: bytes) -> GroupMessageHeader:
        key_id, iteration = _unpack(cls.LAYOUT, FrameType.GROUP_MESSAGE, data)
        return cls(_as_int(key_id), _as_int(iteration))


@dataclass(frozen=True)
class SenderKeyDistributionFrame:
    """A sender key as handed to one member device, inside a pairwise-encrypted `sender_key` message.

    `roster_hash` is the sender's view of the roster at `epoch`: a receiver whose own view differs
    refuses the key, so members with forked views of the membership never share a chain. `key_id`
    names the key among the sender device's keys for the epoch (it changes at every rotation).
    """

    conversation_id: bytes
    epoch: int
    roster_hash: bytes
    key_id: int
    iteration: int
    chain_key: bytes
    signing_public_key: bytes

    LAYOUT = struct.Struct(">BB16sQ32sII32s32s")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(
            VERSION,
            FrameType.SENDER_KEY_DISTRIBUTION,
            self.conversation_id,
            self.epoch,
            self.roster_hash,
            self.key_id,
            self.iteration,
            self.chain_key,
            self.signing_public_key,
        )

    @classmethod
    def decode(cls, data: bytes) -> SenderKeyDistributionFrame:
        if len(data) != cls.LAYOUT.size:
            raise MalformedMessageError("a sender key distribution has a fixed size")
        conversation_id, epoch, roster_hash, key_id, iteration, chain_key, signing_public_key = _unpack(
            cls.LAYOUT, FrameType.SENDER_KEY_DISTRIBUTION, data
        )
        return cls(
            _as_bytes(conversation_id),
            _as_int(epoch),
            _as_bytes(roster_hash),
            _as_int(key_id),
            _as_int(iteration),
            _as_bytes(chain_key),
            _as_bytes(signing_public_key),
        )

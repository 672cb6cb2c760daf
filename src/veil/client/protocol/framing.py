"""Binary headers that travel at the front of `ciphertext`, ahead of the AEAD output.

The server envelope has only `ciphertext`, `nonce` and `auth_tag`, so whatever the receiver needs
before it can pick a key (X3DH inputs, a session id, a chain counter) is framed here. Every frame
starts with a version byte and a type byte; all integers are big-endian and every header has a
fixed size, so parsing is a single `struct.unpack` with nothing to interpret. Headers are not
secret, but they are authenticated: the AEAD's associated data includes them.

    session_init     ver=1 | type=1 | IK_a[32] | EK_a[32] | spk_id u32 | has_opk u8 | opk_id u32   75 bytes
    session_message  ver=1 | type=2 | session_id[16] | counter u32                                  22 bytes
    group_message    ver=1 | type=3 | iteration u32                                                   6 bytes
    sender key dist. ver=1 | type=0x11 | conversation_id[16] | epoch u64 | roster_hash[32]
                     | iteration u32 | chain_key[32] | signing_public_key[32]                    126 bytes

`has_opk` is 0 or 1 and `opk_id` is 0 when `has_opk` is 0, so each header has one encoding.
The sender key distribution's type 0x11 replaced 0x10 (which had no roster hash): a receiver of a
0x10 frame refuses it as an unknown type rather than installing a key bound to no roster.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from veil.client.protocol.errors import MalformedMessageError

VERSION = 1


class FrameType(IntEnum):
    """The second byte of every frame."""

    SESSION_INIT = 1
    SESSION_MESSAGE = 2
    GROUP_MESSAGE = 3
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
class SessionInitHeader:
    """What a responder needs to repeat the initiator's X3DH computation."""

    identity_key: bytes
    ephemeral_key: bytes
    signed_prekey_id: int
    one_time_prekey_id: int | None

    LAYOUT = struct.Struct(">BB32s32sIBI")

    def encode(self) -> bytes:
        has_opk = self.one_time_prekey_id is not None
        return self.LAYOUT.pack(
            VERSION,
            FrameType.SESSION_INIT,
            self.identity_key,
            self.ephemeral_key,
            self.signed_prekey_id,
            int(has_opk),
            self.one_time_prekey_id or 0,
        )

    @classmethod
    def decode(cls, data: bytes) -> SessionInitHeader:
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
        )


@dataclass(frozen=True)
class SessionMessageHeader:
    """Which pairwise session, and which message of the sender's chain."""

    session_id: bytes
    counter: int

    LAYOUT = struct.Struct(">BB16sI")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(VERSION, FrameType.SESSION_MESSAGE, self.session_id, self.counter)

    @classmethod
    def decode(cls, data: bytes) -> SessionMessageHeader:
        session_id, counter = _unpack(cls.LAYOUT, FrameType.SESSION_MESSAGE, data)
        return cls(_as_bytes(session_id), _as_int(counter))


@dataclass(frozen=True)
class GroupMessageHeader:
    """Which message of the sender key's chain; the key itself is found from envelope metadata."""

    iteration: int

    LAYOUT = struct.Struct(">BBI")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(VERSION, FrameType.GROUP_MESSAGE, self.iteration)

    @classmethod
    def decode(cls, data: bytes) -> GroupMessageHeader:
        (iteration,) = _unpack(cls.LAYOUT, FrameType.GROUP_MESSAGE, data)
        return cls(_as_int(iteration))


@dataclass(frozen=True)
class SenderKeyDistributionFrame:
    """A sender key as handed to one member device, inside a pairwise-encrypted `sender_key` message.

    `roster_hash` is the sender's view of the roster at `epoch`: a receiver whose own view differs
    refuses the key, so members with forked views of the membership never share a chain.
    """

    conversation_id: bytes
    epoch: int
    roster_hash: bytes
    iteration: int
    chain_key: bytes
    signing_public_key: bytes

    LAYOUT = struct.Struct(">BB16sQ32sI32s32s")

    def encode(self) -> bytes:
        return self.LAYOUT.pack(
            VERSION,
            FrameType.SENDER_KEY_DISTRIBUTION,
            self.conversation_id,
            self.epoch,
            self.roster_hash,
            self.iteration,
            self.chain_key,
            self.signing_public_key,
        )

    @classmethod
    def decode(cls, data: bytes) -> SenderKeyDistributionFrame:
        if len(data) != cls.LAYOUT.size:
            raise MalformedMessageError("a sender key distribution has a fixed size")
        conversation_id, epoch, roster_hash, iteration, chain_key, signing_public_key = _unpack(
            cls.LAYOUT, FrameType.SENDER_KEY_DISTRIBUTION, data
        )
        return cls(
            _as_bytes(conversation_id),
            _as_int(epoch),
            _as_bytes(roster_hash),
            _as_int(iteration),
            _as_bytes(chain_key),
            _as_bytes(signing_public_key),
        )

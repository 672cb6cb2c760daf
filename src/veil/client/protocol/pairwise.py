"""Pairwise (device-to-device) sessions: X3DH set-up, then the Double Ratchet (see `double_ratchet`).

The initiator's X3DH secret SK is the session's first root key, and the responder's signed prekey
its first peer ratchet key. A session is named by a 16-byte id that both sides compute from the
public `session_init` prefix (SHA-256 of the initiator's identity and ephemeral keys), so every
later `session_message` says which session it belongs to. A peer device may have several live
sessions with us, for example when both sides started one at the same time; we keep a few, send
on the most recently used one, and can decrypt on any. The ids of dropped sessions are remembered
(bounded) so that a replayed `session_init` is refused rather than silently re-established.

Every message is bound (AEAD associated data) to

    DeviceContext.encode() || length_prefixed("veil/session/v2", IK_initiator, IK_responder)
        || length_prefixed(frame prefix) || length_prefixed(ratchet header)

so it opens only between these two identity keys, under the envelope metadata it was sent with,
and with exactly the frame it arrived in (Signal's AD = IK_A || IK_B, plus Veil's metadata).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from veil.client.protocol import x3dh
from veil.client.protocol.codec import (
    b64decode,
    b64encode,
    length_prefixed,
    read_bytes,
    read_list,
    read_mapping,
    read_str,
)
from veil.client.protocol.double_ratchet import MessageAEAD, RatchetMessage, SessionRatchet, X25519Ratchet
from veil.client.protocol.envelope import TAG_SIZE, DeviceContext, Sealed, ensure_fits
from veil.client.protocol.errors import UnknownSessionError
from veil.client.protocol.framing import RatchetHeader, SessionInitHeader, SessionMessageHeader
from veil.client.protocol.keys import KEY_SIZE, DeviceKeys

SESSION_ID_SIZE = 16
MAX_SESSIONS_PER_DEVICE = 5
MAX_RETIRED_SESSION_IDS = 100
_SESSION_LABEL = b"veil/session/v2"
_SESSION_ID_LABEL = b"veil/session-id/v2\x00"


def session_id_for(header: SessionInitHeader) -> bytes:
    """The public name of the session a `session_init` header starts."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(_SESSION_ID_LABEL + header.identity_key + header.ephemeral_key)
    return digest.finalize()[:SESSION_ID_SIZE]


def session_associated_data(
    context: DeviceContext, initiator_identity_key: bytes, responder_identity_key: bytes, prefix: bytes
) -> bytes:
    """Our part of a pairwise message's associated data (the library appends the ratchet header)."""
    return (
        context.encode()
        + length_prefixed(_SESSION_LABEL, initiator_identity_key, responder_identity_key)
        + length_prefixed(prefix)
    )


def _seal(prefix: bytes, message: RatchetMessage) -> Sealed:
    """The wire shape: `prefix || ratchet header || body` as ciphertext, the tag split off."""
    body, tag = message.ciphertext[:-TAG_SIZE], message.ciphertext[-TAG_SIZE:]
    return Sealed(prefix + message.header.encode() + body, message.nonce, tag)


def _unseal(prefix_size: int, sealed: Sealed) -> RatchetMessage:
    header = RatchetHeader.decode(sealed.ciphertext, prefix_size)
    body = sealed.ciphertext[prefix_size + RatchetHeader.LAYOUT.size :]
    return RatchetMessage(header, sealed.nonce, body + sealed.tag)


class PairwiseSession:
    """One established session with one peer device."""

    def __init__(
        self,
        session_id: bytes,
        initiator_identity_key: bytes,
        responder_identity_key: bytes,
        initiated: bool,
        ratchet: SessionRatchet,
    ) -> None:
        self.session_id = session_id
        self.initiator_identity_key = initiator_identity_key
        self.responder_identity_key = responder_identity_key
        self.initiated = initiated
        self.ratchet = ratchet

    @property
    def peer_identity_key(self) -> bytes:
        """The other device's identity key, which this session authenticates."""
        return self.responder_identity_key if self.initiated else self.initiator_identity_key

    @classmethod
    def initiate(
        cls,
        keys: DeviceKeys,
        bundle: x3dh.PrekeyBundle,
        context: DeviceContext,
        plaintext: bytes,
        *,
        ephemeral: X25519PrivateKey | None = None,
        dh: type[X25519Ratchet] = X25519Ratchet,
        aead: type[MessageAEAD] = MessageAEAD,
    ) -> tuple[PairwiseSession, Sealed]:
        """Start a session from a claimed bundle; the `session_init` message carries `plaintext`.

        Later messages are `session_message`s. `ephemeral`, `dh` and `aead` are for known-answer
        vectors only.
        """
        secret, header = x3dh.initiate(keys.identity, bundle, ephemeral=ephemeral)
        prefix = header.encode()
        ensure_fits(len(prefix) + RatchetHeader.LAYOUT.size, len(plaintext))
        ad = session_associated_data(context, keys.identity_key, bundle.identity_key, prefix)
        ratchet, message = SessionRatchet.initiate(
            secret, bundle.signed_prekey, plaintext, ad, dh=dh, aead=aead
        )
        session = cls(session_id_for(header), keys.identity_key, bundle.identity_key, True, ratchet)
        return session, _seal(prefix, message)

    @classmethod
    def accept(
        cls,
        keys: DeviceKeys,
        header: SessionInitHeader,
        sealed: Sealed,
        context: DeviceContext,
        *,
        now: float | None = None,
        dh: type[X25519Ratchet] = X25519Ratchet,
        aead: type[MessageAEAD] = MessageAEAD,
    ) -> tuple[PairwiseSession, bytes]:
        """Answer a `session_init`: derive the session, open its message, then delete the one-time keys.

        `header` is the decoded prefix of `sealed.ciphertext`. `dh` and `aead` are for known-answer
        vectors only.
        """
        secret = x3dh.respond(keys, header)
        signed_prekey = keys.signed_prekey_private(header.signed_prekey_id).private_bytes_raw()
        prefix_size = header.size
        message = _unseal(prefix_size, sealed)
        ad = session_associated_data(
            context, header.identity_key, keys.identity_key, sealed.ciphertext[:prefix_size]
        )
        ratchet, plaintext = SessionRatchet.accept(
            secret, signed_prekey, message, ad, now=now, dh=dh, aead=aead
        )
        if header.one_time_prekey_id is not None:
            keys.consume_one_time_prekey(header.one_time_prekey_id)
        # A PQ last-resort key serves every set-up until it is replaced; a one-time one dies here.
        if header.pq is not None and keys.is_pq_one_time_prekey(header.pq.prekey_id):
            keys.consume_pq_one_time_prekey(header.pq.prekey_id)
        session = cls(session_id_for(header), header.identity_key, keys.identity_key, False, ratchet)
        return session, plaintext

    def encrypt(self, context: DeviceContext, plaintext: bytes) -> Sealed:
        """A `session_message` frame (content type `session_message` or `sender_key`) on the next key."""
        prefix = SessionMessageHeader(self.session_id).encode()
        ensure_fits(len(prefix) + RatchetHeader.LAYOUT.size, len(plaintext))
        message = self.ratchet.encrypt(plaintext, self._associated_data(context, prefix))
        return _seal(prefix, message)

    def decrypt(self, sealed: Sealed, context: DeviceContext, *, now: float | None = None) -> bytes:
        """Open a `session_message` frame of this session; refuses replays and keeps state on failure."""
        prefix_size = SessionMessageHeader.LAYOUT.size
        message = _unseal(prefix_size, sealed)
        ad = self._associated_data(context, sealed.ciphertext[:prefix_size])
        return self.ratchet.decrypt(message, ad, now=now)

    def expire(self, now: float) -> None:
        """Drop skipped message keys older than `double_ratchet.SKIPPED_MAX_AGE` (see there)."""
        self.ratchet.expire(now)

    def _associated_data(self, context: DeviceContext, prefix: bytes) -> bytes:
        return session_associated_data(
            context, self.initiator_identity_key, self.responder_identity_key, prefix
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "session_id": b64encode(self.session_id),
            "initiator_identity_key": b64encode(self.initiator_identity_key),
            "responder_identity_key": b64encode(self.responder_identity_key),
            "initiated": self.initiated,
            "ratchet": self.ratchet.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PairwiseSession:
        initiated = state.get("initiated")
        if not isinstance(initiated, bool):
            raise ValueError("initiated must be a boolean")
        return cls(
            read_bytes(state, "session_id", size=SESSION_ID_SIZE),
            read_bytes(state, "initiator_identity_key", size=KEY_SIZE),
            read_bytes(state, "responder_identity_key", size=KEY_SIZE),
            initiated,
            SessionRatchet.from_state(read_mapping(state, "ratchet")),
        )


class PeerSessions:
    """The sessions with one peer device and its pinned identity key; the last session is the one we
    send on."""

    def __init__(
        self,
        user_id: str,
        device_id: str,
        sessions: list[PairwiseSession] | None = None,
        retired: list[bytes] | None = None,
        *,
        identity_key: bytes | None = None,
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self._sessions = sessions or []
        self._retired = retired or []
        # Kept apart from the sessions so that a pin outlives them (a state of an older version
        # loads with its sessions dropped but its pins kept).
        self._identity_key = identity_key or (
            self._sessions[-1].peer_identity_key if self._sessions else None
        )

    @property
    def active(self) -> PairwiseSession:
        """The session to send on."""
        if not self._sessions:
            raise UnknownSessionError(f"no session with device {self.device_id}")
        return self._sessions[-1]

    @property
    def has_live_session(self) -> bool:
        """Whether there is a session to send on."""
        return bool(self._sessions)

    @property
    def pinned_identity_key(self) -> bytes | None:
        """The identity key this peer device has used so far (None before any session)."""
        return self._identity_key

    def knows(self, session_id: bytes) -> bool:
        """Whether this session id was ever established here (still live, or retired)."""
        return session_id in self._retired or any(s.session_id == session_id for s in self._sessions)

    def find(self, session_id: bytes) -> PairwiseSession:
        """The live session with this id."""
        for session in self._sessions:
            if session.session_id == session_id:
                return session
        raise UnknownSessionError(f"no live session {session_id.hex()} with device {self.device_id}")

    def add(self, session: PairwiseSession) -> None:
        """Make a new session the active one (pinning its peer identity key), retiring the oldest
        beyond the bound. The caller has checked the key against any earlier pin."""
        self._sessions.append(session)
        self._identity_key = session.peer_identity_key
        while len(self._sessions) > MAX_SESSIONS_PER_DEVICE:
            self._retired.append(self._sessions.pop(0).session_id)
        del self._retired[:-MAX_RETIRED_SESSION_IDS]

    def expire(self, now: float) -> None:
        """Drop too-old skipped message keys in every session, including ones that fell silent."""
        for session in self._sessions:
            session.expire(now)

    def promote(self, session: PairwiseSession) -> None:
        """Send on the session the peer last used, so simultaneous set-ups converge on one."""
        self._sessions.remove(session)
        self._sessions.append(session)

    def to_state(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "identity_key": None if self._identity_key is None else b64encode(self._identity_key),
            "sessions": [session.to_state() for session in self._sessions],
            "retired": [b64encode(session_id) for session_id in self._retired],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PeerSessions:
        sessions = []
        for item in read_list(state, "sessions"):
            if not isinstance(item, Mapping):
                raise ValueError("a session entry must be an object")
            sessions.append(PairwiseSession.from_state(item))
        retired = [
            b64decode(item, size=SESSION_ID_SIZE, field="retired") for item in read_list(state, "retired")
        ]
        identity_key = (
            None if state.get("identity_key") is None else read_bytes(state, "identity_key", size=KEY_SIZE)
        )
        return cls(
            read_str(state, "user_id"),
            read_str(state, "device_id"),
            sessions,
            retired,
            identity_key=identity_key,
        )

    @classmethod
    def pin_from_version_2(cls, state: Mapping[str, Any]) -> PeerSessions:
        """A peer of a version 2 state: its identity pin (from its last hash-ratchet session), no sessions."""
        sessions = read_list(state, "sessions")
        identity_key = None
        if sessions:
            if not isinstance(sessions[-1], Mapping):
                raise ValueError("a session entry must be an object")
            identity_key = read_bytes(sessions[-1], "peer_identity_key", size=KEY_SIZE)
        return cls(read_str(state, "user_id"), read_str(state, "device_id"), identity_key=identity_key)

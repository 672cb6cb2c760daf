"""Pairwise (device-to-device) sessions: X3DH set-up followed by one hash ratchet per direction.

A session is named by a 16-byte id that both sides compute from the public `session_init` header
(SHA-256 of the initiator's identity and ephemeral keys), so every later `session_message` says
which session it belongs to. A peer device may have several live sessions with us, for example
when both sides started one at the same time; we keep a few, send on the most recently used one,
and can decrypt on any. The ids of dropped sessions are remembered (bounded) so that a replayed
`session_init` is refused rather than silently re-established.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes

from veil.client.protocol import x3dh
from veil.client.protocol.codec import b64decode, b64encode, read_bytes, read_list, read_mapping, read_str
from veil.client.protocol.envelope import DeviceContext, Sealed, ensure_fits, open_sealed, seal
from veil.client.protocol.errors import UnknownSessionError
from veil.client.protocol.framing import SessionInitHeader, SessionMessageHeader
from veil.client.protocol.keys import KEY_SIZE, DeviceKeys
from veil.client.protocol.ratchet import ReceivingChain, SendingChain, derive_session_chains

SESSION_ID_SIZE = 16
MAX_SESSIONS_PER_DEVICE = 5
MAX_RETIRED_SESSION_IDS = 100


def session_id_for(header: SessionInitHeader) -> bytes:
    """The public name of the session a `session_init` header starts."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"veil/session-id/v1\x00" + header.identity_key + header.ephemeral_key)
    return digest.finalize()[:SESSION_ID_SIZE]


class PairwiseSession:
    """One established session with one peer device."""

    def __init__(
        self, session_id: bytes, peer_identity_key: bytes, sending: SendingChain, receiving: ReceivingChain
    ) -> None:
        self.session_id = session_id
        self.peer_identity_key = peer_identity_key
        self._sending = sending
        self._receiving = receiving

    @classmethod
    def initiate(
        cls, keys: DeviceKeys, bundle: x3dh.PrekeyBundle, context: DeviceContext, plaintext: bytes
    ) -> tuple[PairwiseSession, Sealed]:
        """Start a session from a claimed bundle; the `session_init` message carries `plaintext`.

        The first message uses index 0 of the initiator's chain; later ones are `session_message`s.
        """
        secret, header = x3dh.initiate(keys.identity, bundle)
        outgoing, incoming = derive_session_chains(secret, header.identity_key, bundle.identity_key)
        session = cls(
            session_id_for(header), bundle.identity_key, SendingChain(outgoing), ReceivingChain(incoming)
        )
        _, message_key = session._sending.next_message_key()
        return session, seal(message_key, header.encode(), plaintext, context.encode())

    @classmethod
    def accept(
        cls, keys: DeviceKeys, header: SessionInitHeader, sealed: Sealed, context: DeviceContext
    ) -> tuple[PairwiseSession, bytes]:
        """Answer a `session_init`: derive the session, open its message, then delete the one-time key."""
        secret = x3dh.respond(keys, header)
        incoming, outgoing = derive_session_chains(secret, header.identity_key, keys.identity_key)
        receiving = ReceivingChain(incoming)
        size = SessionInitHeader.LAYOUT.size
        plaintext = receiving.open(0, lambda key: open_sealed(key, sealed, size, context.encode()))
        if header.one_time_prekey_id is not None:
            keys.consume_one_time_prekey(header.one_time_prekey_id)
        return cls(session_id_for(header), header.identity_key, SendingChain(outgoing), receiving), plaintext

    def encrypt(self, context: DeviceContext, plaintext: bytes) -> Sealed:
        """A `session_message` (or `sender_key`) frame on the next index of our sending chain."""
        ensure_fits(SessionMessageHeader.LAYOUT.size, len(plaintext))
        counter, message_key = self._sending.next_message_key()
        header = SessionMessageHeader(self.session_id, counter).encode()
        return seal(message_key, header, plaintext, context.encode())

    def decrypt(
        self,
        header: SessionMessageHeader,
        sealed: Sealed,
        context: DeviceContext,
        *,
        now: float | None = None,
    ) -> bytes:
        """Open a `session_message` frame; refuses replays and keeps state on failure."""
        size = SessionMessageHeader.LAYOUT.size
        return self._receiving.open(
            header.counter, lambda key: open_sealed(key, sealed, size, context.encode()), now=now
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "session_id": b64encode(self.session_id),
            "peer_identity_key": b64encode(self.peer_identity_key),
            "sending": self._sending.to_state(),
            "receiving": self._receiving.to_state(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PairwiseSession:
        return cls(
            read_bytes(state, "session_id", size=SESSION_ID_SIZE),
            read_bytes(state, "peer_identity_key", size=KEY_SIZE),
            SendingChain.from_state(read_mapping(state, "sending")),
            ReceivingChain.from_state(read_mapping(state, "receiving")),
        )


class PeerSessions:
    """The sessions with one peer device; the last in the list is the one we send on."""

    def __init__(
        self,
        user_id: str,
        device_id: str,
        sessions: list[PairwiseSession] | None = None,
        retired: list[bytes] | None = None,
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self._sessions = sessions or []
        self._retired = retired or []

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
        return self._sessions[-1].peer_identity_key if self._sessions else None

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
        """Make a new session the active one, retiring the oldest beyond the bound."""
        self._sessions.append(session)
        while len(self._sessions) > MAX_SESSIONS_PER_DEVICE:
            self._retired.append(self._sessions.pop(0).session_id)
        del self._retired[:-MAX_RETIRED_SESSION_IDS]

    def promote(self, session: PairwiseSession) -> None:
        """Send on the session the peer last used, so simultaneous set-ups converge on one."""
        self._sessions.remove(session)
        self._sessions.append(session)

    def to_state(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "device_id": self.device_id,
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
        return cls(read_str(state, "user_id"), read_str(state, "device_id"), sessions, retired)
